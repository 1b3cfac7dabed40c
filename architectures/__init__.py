"""Interchangeable backbones, one file per family; the registry reads each module's
``@ARCHITECTURES.register`` lines and imports a module when one of its names is first used."""
