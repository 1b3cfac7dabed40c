#!/usr/bin/env bash
# The GPU study's benchmarks, sized for one short lease of a GPU machine: four `harness bench`
# commands, at most 9 minutes together. Each stops at its own time limit and keeps the cells it
# finished. Six files come back in $OUT: machine.txt, lease.log and one bench.csv per command
# (base.csv, attention.csv, eager.csv, compile.csv). Each command runs its cells in one process:
# faster, and GPU peak memory is still reset for each phase, but a cell that crashes the process
# ends that command. Run from the repository root:
#     bash results/gpu_study/lease.sh
# The machine needs pydantic (the harness's configs); where it has none, carry it as wheels in
# .whl/ (Python 3.12, x86-64), made here with
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#         pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
# and they are installed first. Read the results here with `harness bench --from FILE.csv`.
# LEASE_DEVICE=cpu (with LEASE_SIZES, LEASE_LENGTHS, LEASE_LONG and LEASE_ONE small) runs the same
# commands on this machine's CPU: a check that they run, not a study.
set -uo pipefail
out=${OUT:-runs/gpu_lease}
device=${LEASE_DEVICE:-cuda}
scratch=$(mktemp -d)
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} > "$out/machine.txt"

bench() {  # name, time limit in seconds, then the arguments of harness bench
    local name=$1 limit=$2
    shift 2
    echo "== $name: harness bench $*" >> "$out/lease.log"
    timeout -k 10 "$limit" python3 -m harness bench --device "$device" --in-process --results "$scratch" \
        --out "$scratch/$name" "$@" >> "$out/lease.log" 2>&1
    echo "$name: exit $? (124: stopped at ${limit} s; 1: a cell failed, see its row)" >> "$out/machine.txt"
    cp "$scratch/$name/bench.csv" "$out/$name.csv" 2>/dev/null
}

sizes=${LEASE_SIZES:-base large}
read -r base large <<< "$sizes"
lengths=${LEASE_LENGTHS:-512,2048,8192}
long=${LEASE_LONG:-1024,4096,16384}
one=${LEASE_ONE:-2048}
# seven families at base: throughput, memory, MFU and decoding against length
bench base 200 --arch transformer,lstm,gru,mamba2,deltanet,hyena,retnet --size "$base" --lengths "$lengths" --attention auto
# the Transformer's attention on each SDPA backend: memory linear in length on the fused ones?
bench attention 120 --arch transformer --size "$large" --lengths "$long" --attention flash,efficient,math
# torch.compile against eager, the same cells
bench eager 60 --arch transformer,lstm --size "$large" --lengths "$one" --attention auto
bench compile 150 --arch transformer,lstm --size "$large" --lengths "$one" --attention auto --compile
rm -rf "$scratch"
