"""The ``gateway`` section of the project settings (defaults in settings/defaults.yaml).

Secrets live in the same section and are set per deployment through the settings'
environment overrides, e.g. ``EMAIL_STREAMING__GATEWAY__SENDGRID__PUBLIC_KEY=MFkw...``,
like ``normalize.hmac_key``. Values are read with ``.get`` so that the section may be
partial (or absent) in the YAML.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import settings
from gateway.signatures import VERIFIERS

PROVIDERS = tuple(VERIFIERS)

# The defaults are settings/defaults.yaml's gateway section: one place for them.
DEFAULTS: dict[str, Any] = settings.load(environ={})["gateway"]

# Which secret keys make a provider "configured"; any one group suffices.
_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "sendgrid": (("public_key",),),
    "mailgun": (("signing_key",),),
    "ses": (("topic_arns",),),
    "postmark": (("username", "password"),),
    "sparkpost": (("username", "password"), ("token",)),
    "mandrill": (("webhook_key", "url"),),
}


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


@dataclass(frozen=True)
class GatewaySettings:
    section: Mapping[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULTS))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GatewaySettings:
        """From ``settings.load()`` (its ``gateway`` section over DEFAULTS)."""
        return cls.from_section(config.get("gateway") or {})

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> GatewaySettings:
        return cls(_deep_merge(copy.deepcopy(DEFAULTS), section))

    def __getitem__(self, key: str) -> Any:
        return self.section[key]

    def provider(self, name: str) -> Mapping[str, Any]:
        """That provider's settings (its secrets and windows)."""
        return self.section.get(name) or {}

    def verifies(self, name: str) -> bool:
        return bool(self.section["verify"].get(name, True))

    def configured(self, name: str) -> bool:
        """Whether the secrets needed to verify ``name`` are set."""
        values = self.provider(name)
        return any(all(values.get(k) for k in group) for group in _REQUIRED[name])

    @property
    def tracker_keys(self) -> list[str]:
        keys = self.section["tracker"].get("keys") or []
        if isinstance(keys, str):  # one key set through an env var
            keys = [keys]
        return [str(k) for k in keys if k]
