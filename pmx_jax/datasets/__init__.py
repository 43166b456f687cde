"""Example datasets bundled with pmx_jax (classic public teaching data, see README.md).

>>> from pmx_jax import datasets
>>> datasets.names()
('theophylline', 'phenobarbital', 'quinidine')
"""

from ._registry import load, load_table, names, quinidine_to_nonmem

__all__ = ["load", "load_table", "names", "quinidine_to_nonmem"]
