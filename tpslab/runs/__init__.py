"""Planning and executing a profile's runs.

The jobs and their folders, the executors (local, local-parallel, SLURM), scoring stored
predictions under both protocols, the comparison and the notebooks' reproduction.
"""
