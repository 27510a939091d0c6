"""Writes the Flink configuration of a container in docker-compose.yml.

Base: the repository's flink-conf/config.yaml, the same file the local stack starts from
(stack/flink.py), bind-mounted read-only so an edit applies on the next container start.
Added, as stack/flink.py does: env.java.opts.all (the Java 17 module opens Flink needs) from
the image's own default config.yaml, saved at build time. The per-container keys (addresses,
ports, checkpoint directory, python.executable) are not set here: the official image's
entrypoint applies them afterwards from FLINK_PROPERTIES.

Usage: render_config.py REPO_CONFIG IMAGE_DEFAULTS OUT
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

JAVA_OPTS = "env.java.opts.all"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flink reads both `a: {b: 1}` and `a.b: 1`; compare and merge in the flat form."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def render(repo_config: Path, image_defaults: Path) -> dict[str, Any]:
    conf = flatten(yaml.safe_load(repo_config.read_text()) or {})
    defaults = flatten(yaml.safe_load(image_defaults.read_text()) or {})
    if JAVA_OPTS not in defaults:
        raise SystemExit(f"{image_defaults} has no {JAVA_OPTS}: the image's default Flink "
                         "config changed; Flink needs those Java 17 options")
    conf[JAVA_OPTS] = defaults[JAVA_OPTS]
    return conf


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    repo_config, image_defaults, out = map(Path, argv)
    conf = render(repo_config, image_defaults)
    out.write_text(yaml.safe_dump(conf, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
