"""NONMEM interoperability: control streams in, and a fit's results in the files
NONMEM writes, so that the NONMEM ecosystem (Pharmpy, Xpose, PsN, Pirana) reads
a pmx run.

:func:`read_model` reads a control stream (``$INPUT``/``$DATA`` by position,
``$SUBROUTINES`` ADVAN1-4/6/13, abbreviated code, ``$THETA``/``$OMEGA``/
``$SIGMA``, ``$ESTIMATION``) into a pmx model, its dataset and the estimation
settings, and refuses what it does not cover with the record and line.

:func:`write_model` writes a pmx model as a control stream (its blocks traced
with JAX and translated into abbreviated code; the data file beside it), which
:func:`read_model` reads back with the same objective function.

:func:`write_nonmem_results` writes the run files (``.ext`` with one row per
iteration and the special rows, ``.phi``, ``.cov``/``.cor``/``.coi``, ``.shk``);
:func:`write_tables` the ``$TABLE`` files in Xpose's naming (``sdtab``,
``patab``, ``cotab``, ``catab``); :func:`write_listing` the ``.lst``-like
report.  ``pmx fit`` writes all of them into its run folder.
"""

from ._control import ControlStreamError as ControlStreamError
from ._control import read_model as read_model
from ._listing import write_listing as write_listing
from ._results import write_covariance as write_covariance
from ._results import write_ext as write_ext
from ._results import write_nonmem_results as write_nonmem_results
from ._results import write_phi as write_phi
from ._results import write_shk as write_shk
from ._tables import catab as catab
from ._tables import cotab as cotab
from ._tables import patab as patab
from ._tables import sdtab as sdtab
from ._tables import time_after_dose as time_after_dose
from ._tables import write_table as write_table
from ._tables import write_tables as write_tables
from ._write import ExportError as ExportError
from ._write import write_model as write_model
