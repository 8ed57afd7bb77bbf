"""Build the compiled kernels; everything else about the package is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import setup

setup(ext_modules=cythonize(["pcapclass/_addrtext.pyx", "pcapclass/_certificate.pyx", "pcapclass/_decode.pyx", "pcapclass/_firstlook.pyx", "pcapclass/_laterlooks.pyx", "pcapclass/_name_memo.pyx", "pcapclass/_flowhash.pyx", "pcapclass/_flowkeys.pyx", "pcapclass/_rowset.pyx", "pcapclass/_identify.pyx", "pcapclass/_deciding.pyx", "pcapclass/_server_names.pyx", "pcapclass/sources/_records.pyx"], compiler_directives={"language_level": 3}))
