"""The decision core: pure, deterministic, no I/O, no clock, no Faust.

Its modules may run compiled by mypyc from these same sources (``make compile``); ``compiled``
decides which form loads, before any of them is imported.
"""

from .compiled import Form, install

#: Which form of the core this process runs (compiled by mypyc, or the sources), and why.
FORM: Form = install(__path__)
