"""Lets mmengine resolve package-scoped config paths (``mmdet::_base_/...``) without
``pkg_resources``.

mmengine 0.10.7 finds an installed package's config folder through ``pkg_resources``, which
setuptools removed in version 81; the stack pinned here has no ``pkg_resources``, so every
``mmdet::`` base fails with ``ModuleNotFoundError``. ``enable_package_scoped_configs`` gives
mmengine's config parser the same two answers from ``importlib`` (is the package importable,
where is it). It changes nothing where ``pkg_resources`` exists. ``import detection`` calls it.
"""
from __future__ import annotations

import importlib.util
import os

__all__ = ['enable_package_scoped_configs']


def _is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _get_installed_path(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f'package {package!r} is not installed: cannot resolve "{package}::" config paths')
    return os.path.dirname(spec.origin)


def enable_package_scoped_configs() -> None:
    if importlib.util.find_spec('pkg_resources') is not None:
        return  # mmengine's own lookup works
    from mmengine.config import config as config_module
    config_module.is_installed = _is_installed
    config_module.get_installed_path = _get_installed_path
