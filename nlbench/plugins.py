"""The plugin manager: finds method and dataset plugins and records where each came from.

Three sources, all through the same pluggy hooks (:mod:`nlbench.hookspecs`):

1. the built-in plugin folders ``methods/``, ``datasets/`` and ``executors/``, loaded file by file
   *by path* under a private module namespace (they are not importable packages: a top-level
   ``datasets`` would shadow Hugging Face's package), and the built-in loggers
   (:mod:`nlbench.loggers`, an ordinary module registered as a plugin);
2. folders listed in benchmark.toml under ``[plugins] paths``, loaded the same way; files whose
   name starts with ``_`` or ``test_`` are not plugins (a folder may hold its plugins' tests);
3. installed packages exposing the entry-point group ``nlbench``
   (skipped when ``NLBENCH_DISABLE_PLUGIN_AUTOLOAD=1``).

Each plugin loads inside its own try/except: a broken plugin is recorded with its error (shown by
``nlbench plugins``) and never stops the others. Two plugins registering the same name make that
name unusable, with an error naming both.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from nlbench import hookspecs
from nlbench.dataset import Dataset
from nlbench.errors import PluginError
from nlbench.method import Method
from nlbench.registry import Entry, PluginInfo, Registry

ENTRY_POINT_GROUP = "nlbench"
DISABLE_AUTOLOAD_ENV = "NLBENCH_DISABLE_PLUGIN_AUTOLOAD"
PRIVATE_NAMESPACE = "nlbench._loaded_plugins"


def builtin_plugin_dirs() -> list[Path]:
    """The built-in plugin folders: inside the installed package (wheel) or beside it (source)."""
    package = Path(__file__).resolve().parent
    for base in (package / "_builtin", package.parent):
        methods, datasets, executors = base / "methods", base / "datasets", base / "executors"
        if (methods / "standard.py").is_file() and (datasets / "synthfer.py").is_file() and (executors / "local.py").is_file():
            return [methods, datasets, executors]
    raise PluginError(
        f"the built-in plugin folders methods/, datasets/ and executors/ were not found next to {package}; "
        f"reinstall nlbench."
    )


def load_module_from_path(path: Path, namespace: str) -> ModuleType:
    """Import one plugin file under a private module name (never via sys.path)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"{PRIVATE_NAMESPACE}.{namespace}_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if os.environ.get("NLBENCH_DEBUG"):
        text += "\n" + "".join(traceback.format_exception(err))
    return text


def _folder_plugins(folder: Path, kind: str) -> Iterable[tuple[PluginInfo, Any]]:
    from nlbench import __version__

    if not folder.is_dir():
        yield PluginInfo(folder.name, kind, str(folder), "", error=f"plugin folder {folder} does not exist"), None
        return
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith(("_", "test_")):  # private helpers, and the plugins' own tests
            continue
        version = __version__ if kind == "built-in" else ""
        info = PluginInfo(f"{folder.name}/{path.stem}", kind, str(path), version)
        try:
            module = load_module_from_path(path, folder.name)
        except (Exception, SystemExit) as err:  # a broken plugin (even one calling sys.exit) never stops the others
            info.error = _describe(err)
            module = None
        yield info, module


def _entry_point_plugins() -> Iterable[tuple[PluginInfo, Any]]:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        info = PluginInfo(ep.name, "entry point", dist.name if dist else ep.value, dist.version if dist else "")
        try:
            obj = ep.load()
        except (Exception, SystemExit) as err:  # a plugin's sys.exit is its failure, not nlbench's exit
            info.error = _describe(err)
            obj = None
        yield info, obj


REGISTRATION_HOOKS = (("register_methods", "method"), ("register_datasets", "dataset"),
                      ("register_executors", "executor"), ("register_loggers", "logger"))


def _builtin_modules() -> Iterable[tuple[PluginInfo, Any]]:
    """The built-in plugins that are modules of the package itself (the loggers)."""
    from nlbench import __version__, loggers

    yield PluginInfo("nlbench.loggers", "built-in", str(Path(loggers.__file__).resolve()), __version__), loggers


def build_registry(extra_dirs: Iterable[Path] = (), autoload: bool | None = None) -> Registry:
    """Load every plugin and collect what they register.

    Each plugin module is registered with the pluggy manager; hook implementations that match no
    hook specification (a misspelt ``register_method``) are found with pluggy's
    ``check_pending`` and fail their plugin with the reason. The registration hooks are then
    called through the manager, one plugin at a time (``subset_hook_caller``), so what a plugin
    registers is attributed to it and a plugin that raises never stops the others.
    """
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes")
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry(manager=manager)
    sources: list[tuple[PluginInfo, Any]] = []
    for folder in builtin_plugin_dirs():
        sources.extend(_folder_plugins(folder, "built-in"))
    sources.extend(_builtin_modules())
    for folder in extra_dirs:
        sources.extend(_folder_plugins(Path(folder), "folder"))
    if autoload:
        sources.extend(_entry_point_plugins())

    loaded: list[tuple[PluginInfo, Any]] = []
    for info, plugin in sources:
        registry.plugins.append(info)
        if plugin is None:
            continue
        try:
            manager.register(plugin, name=f"{info.kind}:{info.origin}:{info.name}")
        except Exception as err:  # pluggy's own validation: a hookimpl whose arguments match no spec
            info.error = _describe(err)
            continue
        loaded.append((info, plugin))
    _reject_unknown_hooks(manager, loaded)

    for info, plugin in loaded:
        if info.error is not None:
            continue
        others = [p for _, p in loaded if p is not plugin]
        for hook_name, kind in REGISTRATION_HOOKS:
            table = {"method": registry.methods, "dataset": registry.datasets, "executor": registry.executors,
                     "logger": registry.loggers}[kind]
            caller = manager.subset_hook_caller(hook_name, remove_plugins=others)
            if not caller.get_hookimpls():
                continue
            try:
                caller(register=_registrar(registry, info, table, kind))
            except (Exception, SystemExit) as err:  # a plugin's sys.exit is its failure, not nlbench's exit
                info.error = _describe(err)
    return registry


def _reject_unknown_hooks(manager: pluggy.PluginManager, loaded: list[tuple[PluginInfo, Any]]) -> None:
    """Fail (and unregister) every plugin with a hook implementation that matches no nlbench hook."""
    infos = {id(plugin): info for info, plugin in loaded}
    known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith(("register_", "on_"))))
    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as err:
            info = infos.get(id(err.plugin))
            bad = [name for name in dir(manager.hook)
                   if not name.startswith("_") and not getattr(manager.hook, name).has_spec()
                   and any(impl.plugin is err.plugin for impl in getattr(manager.hook, name).get_hookimpls())]
            message = (f"implements {', '.join(bad) or 'a hook'}, which is not an nlbench hook (misspelt?); "
                       f"the hooks are: {known}")
            if info is not None:
                info.error = message
            manager.unregister(err.plugin)
            if info is None:  # not one of ours: nothing to attribute it to, stop here
                return


def _registrar(registry: Registry, info: PluginInfo, table: dict[str, Entry], kind: str) -> Any:
    from nlbench.executors import Executor
    from nlbench.loggers import Logger

    base = {"method": Method, "dataset": Dataset, "executor": Executor, "logger": Logger}[kind]

    def register(cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(f"register() expects a nlbench.{base.__name__} subclass, got {cls!r}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
            raise PluginError(f"{cls.__name__}.name must be an identifier-like string, got {name!r}")
        if (kind, name) in registry.conflicts:
            registry.conflicts[(kind, name)].append(info)
            raise PluginError(f"{kind} {name!r} is already registered by several plugins")
        if name in table:
            first = table.pop(name)
            registry.conflicts[(kind, name)] = [first.plugin, info]
            message = (
                f"{kind} {name!r} is registered by both {first.plugin.name} ({first.plugin.origin}) "
                f"and {info.name} ({info.origin})"
            )
            first.plugin.error = first.plugin.error or message
            raise PluginError(message)
        table[name] = Entry(name, cls, info)
        info.registered.append(f"{kind}:{name}")

    return register


_CACHE: dict[tuple, Registry] = {}


def get_registry(extra_dirs: Iterable[Path] = ()) -> Registry:
    """The registry for this process (built once per set of extra plugin folders)."""
    key = (tuple(str(Path(d).resolve()) for d in extra_dirs), os.environ.get(DISABLE_AUTOLOAD_ENV, ""))
    if key not in _CACHE:
        _CACHE[key] = build_registry(extra_dirs)
    return _CACHE[key]
