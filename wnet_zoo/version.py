"""The installed wnet-zoo version, in a module of its own so that every module can read it without importing the
package root (which would make the root and its modules import each other)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wnet-zoo")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
