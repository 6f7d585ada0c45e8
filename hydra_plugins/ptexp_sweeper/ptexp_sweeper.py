"""Hydra instantiates sweepers only from classes defined in the `hydra_plugins` namespace;
the logic lives in ptexp.sweep."""

from ptexp import sweep


class PtexpSweeper(sweep.PtexpSweeper):
    pass


sweep.register()
