"""arcbench's built-in plugins: devices, backbones and heads.

Each is a plain module registered through the same hooks as a third-party
plugin (see :mod:`arcbench.hookspecs`); the loading lives in
:mod:`arcbench.plugin_manager`, the registries in :mod:`arcbench.registry`.
"""
