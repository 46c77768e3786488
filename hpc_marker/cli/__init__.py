"""cli: the `hpcmarker` command line, click only; each command calls one function of the packages below.

group.py   the `hpcmarker` group: config defaults, errors as exit codes (UserError 2, Refused 1, a bug: traceback;
           click's usage errors one line, exit 2); commands listed in a run's order, whole descriptions
submitopts.py  the click options of submit, resume, retry and grow, made from the option schema (config/options.py)
sections.py  help in sections, with examples (submit, resume, retry)
run.py     submit, plan
estimate.py  estimate (wall time, GPU-hours, cost of a folder's run, before submitting)
watch.py   status, logs
manage.py  cancel, resume, retry, grow, continue (the collector's next round)
outputs.py collect, report, export
admin.py   templates, config, doctor, prefetch
llm.py     llm bench, pull, create (and the hidden serve)
"""

from __future__ import annotations

import sys

from hpc_marker.cli.group import cli

__all__ = ["cli", "main"]


def _add_commands() -> None:
    from hpc_marker.cli import admin, estimate, llm, manage, outputs, run, watch

    for command in (
        run.submit,
        run.plan_command,
        estimate.estimate_command,
        watch.status,
        watch.logs,
        manage.cancel,
        manage.resume,
        manage.retry,
        manage.grow,
        manage.continue_command,
        outputs.collect,
        outputs.report,
        outputs.export,
        llm.llm,
        admin.templates,
        admin.config,
        admin.doctor_command,
        admin.prefetch_command,
    ):
        cli.add_command(command)


_add_commands()


def main() -> None:
    cli(prog_name="hpcmarker")


if __name__ == "__main__":
    sys.exit(main())
