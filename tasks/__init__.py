"""Tasks, one file per family; the registry reads each module's ``@TASKS.register`` lines and
imports a module when one of its names is first used."""
