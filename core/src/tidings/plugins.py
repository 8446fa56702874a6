"""Loading plugins: entry points, allow/block lists, built-ins, and channel dispatch.

Built-in behaviour (the contact store's lookup) is registered exactly like a third-party
plugin, so it can be listed by ``tidings plugins`` and blocked by
``TIDINGS_DISABLE_PLUGINS`` like any other.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar, cast

import anyio
import pluggy
from pydantic import BaseModel

from tidings import hookspecs
from tidings.channel import Account, Channel
from tidings.errors import PluginError
from tidings.models import (
    Address,
    ContactMatch,
    InboundMessage,
    OutboundMessage,
    PolledBatch,
    SendResult,
    StatusUpdate,
    WebhookRequest,
    merge_matches,
)

ENTRY_POINT_GROUP = hookspecs.PROJECT

log = logging.getLogger("tidings.plugins")

BUILTIN_PLUGINS: tuple[str, ...] = ("tidings.contacts.lookup",)
"""Modules of the core registered as plugins, named by their module path."""

T = TypeVar("T")


@dataclass(frozen=True)
class PluginInfo:
    """What ``tidings plugins`` prints about one loaded plugin."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    channels: tuple[str, ...]


def _env_list(env: Mapping[str, str], key: str) -> set[str] | None:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


async def _resolve(value: T | Any) -> T:
    if inspect.isawaitable(value):
        return cast(T, await value)
    return cast(T, value)


def _check_items(hook: str, channel: str, value: Any, kind: type[BaseModel]) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise PluginError(
            f"channel {channel!r}: hook {hook} must return a sequence of "
            f"{kind.__name__}, got {type(value).__name__}"
        )
    items = list(value)
    for item in items:
        if not isinstance(item, kind):
            raise PluginError(
                f"channel {channel!r}: hook {hook} returned a {type(item).__name__}, "
                f"expected {kind.__name__}"
            )
    return items


class ChannelHandle:
    """Calls the channel hooks of one channel, and only that channel's implementations."""

    def __init__(self, plugins: Plugins, channel: Channel, plugin_name: str) -> None:
        self.channel = channel
        self.plugin_name = plugin_name
        others = [
            p
            for name, p in plugins.pm.list_name_plugin()
            if name in plugins._channel_objects and p is not channel
        ]
        hook = plugins.pm.hook
        self._callers = {
            name: plugins.pm.subset_hook_caller(name, others) if others else getattr(hook, name)
            for name in hookspecs.CHANNEL_HOOKS
        }
        self.implemented = frozenset(
            h
            for h in hookspecs.CHANNEL_HOOKS
            if any(i.plugin is channel for i in getattr(hook, h).get_hookimpls())
        )

    @property
    def name(self) -> str:
        return self.channel.name

    def _require(self, hook: str) -> None:
        if hook not in self.implemented:
            raise PluginError(f"channel {self.name!r} does not implement the {hook} hook")

    def _call(self, hook: str, **kwargs: Any) -> Any:
        self._require(hook)
        return self._callers[hook](**kwargs)

    async def receive(
        self, account: Account[Any], request: WebhookRequest | PolledBatch
    ) -> list[InboundMessage]:
        result = await _resolve(self._call("receive", account=account, request=request))
        return _check_items("receive", self.name, result, InboundMessage)

    async def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        result = await _resolve(self._call("send", account=account, message=message))
        if not isinstance(result, SendResult):
            raise PluginError(
                f"channel {self.name!r}: hook send must return SendResult, "
                f"got {type(result).__name__}"
            )
        return result

    async def delivery_status(
        self, account: Account[Any], request: WebhookRequest | PolledBatch
    ) -> list[StatusUpdate]:
        result = await _resolve(self._call("delivery_status", account=account, request=request))
        return _check_items("delivery_status", self.name, result, StatusUpdate)

    async def poll(
        self, account: Account[Any], cursor: Mapping[str, Any] | None, *, follow: bool
    ) -> AsyncGenerator[PolledBatch, None]:
        """The channel's batches, type-checked as they come."""
        batches = self._call("poll", account=account, cursor=cursor, follow=follow)
        if not isinstance(batches, AsyncGenerator):
            if inspect.iscoroutine(batches):
                batches.close()  # an ``async def`` without ``yield``: never awaited
            raise PluginError(
                f"channel {self.name!r}: hook poll must be an async generator, "
                f"got {type(batches).__name__}"
            )
        # Closed here, in the consumer's task, not by the garbage collector: the channel's
        # clean-up (IMAP LOGOUT) must be awaited. Consumers close this generator the same
        # way (contextlib.aclosing) when they stop early.
        async with aclosing(batches):
            async for batch in batches:
                if not isinstance(batch, PolledBatch):
                    raise PluginError(
                        f"channel {self.name!r}: hook poll yielded a {type(batch).__name__}, "
                        "expected PolledBatch"
                    )
                yield batch

    async def acknowledge(self, account: Account[Any], batch: PolledBatch) -> None:
        await _resolve(self._call("acknowledge", account=account, batch=batch))


@dataclass
class Plugins:
    """The loaded plugins: the pluggy manager plus the channels they registered."""

    pm: pluggy.PluginManager
    channels: dict[str, ChannelHandle] = field(default_factory=dict)
    _channel_objects: dict[str, Channel] = field(default_factory=dict)
    _dists: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelHandle:
        try:
            return self.channels[name]
        except KeyError:
            installed = ", ".join(sorted(self.channels)) or "none"
            raise PluginError(
                f"channel {name!r} is not installed (installed: {installed})"
            ) from None

    async def lookup_contacts(
        self, addresses: Sequence[Address], store: Any
    ) -> dict[str, list[ContactMatch]]:
        """Ask every contact source concurrently; merge the answers per address key in
        registration order. Every asked address has an entry (possibly empty)."""
        wanted = list({a.key: a for a in addresses}.values())
        impls = self.pm.hook.lookup_contacts.get_hookimpls()
        answers: list[Mapping[str, Sequence[ContactMatch]]] = [{} for _ in impls]

        async def ask(index: int, impl: Any) -> None:
            kwargs = {"addresses": wanted, "store": store}
            try:
                value = await _resolve(impl.function(**{k: kwargs[k] for k in impl.argnames}))
            except Exception:  # one broken CRM must not stop ingestion
                log.exception("contact lookup failed in %s", impl.plugin_name)
                return
            if value is None:
                return
            if not isinstance(value, Mapping):
                log.error(
                    "contact lookup in %s returned %s, not a mapping of address keys; ignored",
                    impl.plugin_name,
                    type(value).__name__,
                )
                return
            answers[index] = value

        if wanted:
            async with anyio.create_task_group() as tg:
                for index, impl in enumerate(impls):
                    tg.start_soon(ask, index, impl)
        return {
            a.key: merge_matches(
                [
                    [m for m in answer.get(a.key, ()) if isinstance(m, ContactMatch)]
                    for answer in answers
                ]
            )
            for a in wanted
        }

    async def call_listeners(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a listener hook, awaiting async ones; one failing
        listener is logged and does not stop the others."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                await _resolve(impl.function(**{k: kwargs[k] for k in impl.argnames}))
            except Exception:
                log.exception("listener %s of %s failed", impl.plugin_name, hook_name)

    def info(self) -> list[PluginInfo]:
        """One entry per plugin module (channels are listed under their plugin)."""
        rows: list[PluginInfo] = []
        owner_of = {obj_name: obj_name.split(":", 1)[0] for obj_name in self._channel_objects}
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if name in owner_of:
                continue
            hooks = set(_hook_names(self.pm, plugin))
            channels = []
            for obj_name, obj in self._channel_objects.items():
                if owner_of[obj_name] == name:
                    channels.append(obj.name)
                    hooks.update(_hook_names(self.pm, obj))
            dist, version = self._dists.get(name, (None, None))
            rows.append(
                PluginInfo(name, dist, version, tuple(sorted(hooks)), tuple(sorted(channels)))
            )
        return rows


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return [caller.name for caller in pm.get_hookcallers(plugin) or []]


def _selected(eps: Iterable[EntryPoint], env: Mapping[str, str]) -> list[EntryPoint]:
    allow = _env_list(env, "TIDINGS_PLUGINS")
    block = _env_list(env, "TIDINGS_DISABLE_PLUGINS") or set()
    chosen = []
    for ep in sorted(eps, key=lambda e: e.name):
        if allow is not None and ep.name not in allow:
            continue
        if ep.name in block:
            continue
        chosen.append(ep)
    return chosen


def load_plugins(
    env: Mapping[str, str] | None = None,
    *,
    extra: Sequence[tuple[str, object]] = (),
    entry_points_enabled: bool = True,
) -> Plugins:
    """Build the plugin manager: built-ins, then entry points, then ``extra`` (for tests).

    ``TIDINGS_PLUGINS=a,b`` loads only those entry-point plugins; ``TIDINGS_DISABLE_PLUGINS``
    blocks the named ones, built-ins included. Raises ``PluginError`` for a plugin that
    fails to import, has a hook implementation no spec knows (``check_pending``), or
    registers a channel badly.
    """
    env = os.environ if env is None else env
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    block = _env_list(env, "TIDINGS_DISABLE_PLUGINS") or set()

    def register(name: str, plugin: object, dist: tuple[str | None, str | None]) -> None:
        try:
            pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        plugins._dists[name] = dist

    for module_name in BUILTIN_PLUGINS:
        if module_name not in block:
            register(module_name, importlib.import_module(module_name), ("tidings", _version()))

    if entry_points_enabled:
        for ep in _selected(entry_points(group=ENTRY_POINT_GROUP), env):
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {ep.name!r} failed to load: {exc!r}") from exc
            dist = (ep.dist.name, ep.dist.version) if ep.dist else (None, None)
            register(ep.name, module, dist)

    for name, plugin in extra:
        register(name, plugin, (None, None))

    _check_channel_hooks_only_on_channels(pm)
    _register_channels(plugins)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} (is the hook name misspelled?)") from exc
    return plugins


def _check_channel_hooks_only_on_channels(pm: pluggy.PluginManager) -> None:
    for hook_name in hookspecs.CHANNEL_HOOKS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if not impl.hookwrapper and not impl.wrapper:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} implements the channel hook {hook_name} "
                    "at module level: implement it as a method of a Channel returned by "
                    "register_channels (only wrappers may observe every channel)"
                )


def _register_channels(plugins: Plugins) -> None:
    pm = plugins.pm
    owners: dict[str, str] = {}
    for impl in pm.hook.register_channels.get_hookimpls():
        try:
            channels = cast(Iterable[object], impl.function() or ())
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r}: register_channels failed: {exc!r}"
            ) from exc
        for channel in channels:
            if not isinstance(channel, Channel):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: register_channels returned "
                    f"{channel!r}, not a tidings.Channel instance"
                )
            for attr in ("name", "kind"):
                if not isinstance(getattr(channel, attr, None), str):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: {type(channel).__name__}.{attr} is not set"
                    )
            if channel.name in owners:
                other = owners[channel.name]
                raise PluginError(
                    f"channel {channel.name!r} is registered twice "
                    f"(by {other!r} and {impl.plugin_name!r})"
                )
            obj_name = f"{impl.plugin_name}:{channel.name}"
            try:
                pm.register(channel, name=obj_name)
            except (pluggy.PluginValidationError, ValueError) as exc:
                raise PluginError(f"channel {channel.name!r}: {exc}") from exc
            plugins._channel_objects[obj_name] = channel
            owners[channel.name] = impl.plugin_name
    # Handles are built once every channel is registered: each must exclude all the others.
    for obj_name, channel in plugins._channel_objects.items():
        handle = ChannelHandle(plugins, channel, obj_name.split(":", 1)[0])
        _check_required_hooks(handle)
        plugins.channels[channel.name] = handle


def _check_required_hooks(handle: ChannelHandle) -> None:
    """A channel must implement what its declarations promise, or start-up fails."""
    from tidings.models import Endpoint

    channel = handle.channel
    caps = channel.capabilities
    needed = set()
    kinds = set(channel.webhooks.values())
    if kinds & {Endpoint.MESSAGES, Endpoint.EVENTS} or caps.polled:
        needed.add("receive")
    if caps.polled:
        needed.update(("poll", "acknowledge"))
    if kinds & {Endpoint.STATUSES, Endpoint.EVENTS}:
        needed.add("delivery_status")
    if caps.can_reply or caps.can_initiate:
        needed.add("send")
    missing = sorted(needed - handle.implemented)
    if missing:
        raise PluginError(
            f"channel {channel.name!r} declares capabilities that need the hook(s) "
            f"{', '.join(missing)}, but does not implement them with @hookimpl"
        )


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tidings")
    except PackageNotFoundError:
        return None
