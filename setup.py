"""For setuptools builds without PEP 517 (Debian 11's pybuild has no pyproject plugin): the
metadata is setup.cfg's."""
from setuptools import setup

setup()
