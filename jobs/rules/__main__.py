"""python -m jobs.rules validate | test | run | deploy — the journey rules in sql/rules/.

  validate  parse and plan the shared views and every rule; prints file:line: Flink's
            message for each broken one; exit 1 if any
  test      run the YAML cases beside the rules on a local MiniCluster (one Flink job for
            all cases); prints a diff for each failing case; exit 1 if any fails
  run       submit all rules as one job to the cluster (flink.rest_url)
  deploy    replace the running rules job: stop it with a savepoint and resubmit from it
            (state of operators whose plan is unchanged is kept); submit if none runs

How to write a rule: sql/rules/README.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import settings
from jobs import rules
from jobs.rules.files import read_rules


def _validate(config: dict, rules_dir: Path, only: list[str]) -> int:
    from jobs.rules import local

    rule_list = read_rules(rules_dir, only)
    t_env = local.create_table_env(config)
    with tempfile.TemporaryDirectory(prefix="rules-validate-") as tmp:
        problems = local.validate(t_env, config, rule_list, Path(tmp))
    for problem in problems:
        print(problem)
    bad = {p.path for p in problems}
    print(f"{len(rule_list) - len(bad & {r.path for r in rule_list})} of {len(rule_list)} "
          f"rules valid" + (f"; {len(problems)} problem(s)" if problems else ""))
    return 1 if problems else 0


def _test(config: dict, rules_dir: Path, only: list[str]) -> int:
    from jobs.rules import cases, local

    started = time.monotonic()
    rule_list = read_rules(rules_dir, only)
    t_env = local.create_table_env(config)
    with tempfile.TemporaryDirectory(prefix="rules-test-") as tmp:
        report = cases.run_cases(t_env, config, rule_list, Path(tmp))
    print(report.render())
    print(f"({time.monotonic() - started:.1f} s)")
    return 0 if report.ok else 1


def _run(config: dict, config_path: str | None) -> int:
    from jobs.rules import deploy

    # A broken rule must not reach the cluster (nor stop the running job in deploy).
    if _validate(config, rules.rules_dir(config), []) != 0:
        return 1
    print(f"submitted {rules.JOB_NAME}: JobID {deploy.run(config, config_path)}")
    return 0


def _deploy(config: dict, config_path: str | None) -> int:
    from jobs.rules import deploy

    if _validate(config, rules.rules_dir(config), []) != 0:
        return 1
    result = deploy.deploy(config, config_path)
    if result.savepoint:
        print(f"stopped {result.stopped} with savepoint {result.savepoint}")
    print(f"submitted {rules.JOB_NAME}: JobID {result.job_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.rules", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["validate", "test", "run", "deploy"])
    parser.add_argument("rule", nargs="*", help="rule ids (validate/test); default: all")
    parser.add_argument("--rules-dir", help="folder of rule files (default: rules.dir)")
    parser.add_argument("--config", help="YAML file merged over settings/defaults.yaml")
    args = parser.parse_args(argv)
    try:
        config = settings.load(args.config)
        rules_dir = Path(args.rules_dir) if args.rules_dir else rules.rules_dir(config)
        if args.command in ("run", "deploy") and (args.rules_dir or args.rule):
            parser.error("run/deploy take the rules from rules.dir (set it in --config)")
        if args.command == "validate":
            return _validate(config, rules_dir, args.rule)
        if args.command == "test":
            return _test(config, rules_dir, args.rule)
        if args.command == "run":
            return _run(config, args.config)
        return _deploy(config, args.config)
    except (settings.ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from stack.errors import StackError

        if isinstance(exc, StackError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
