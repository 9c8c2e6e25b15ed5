"""Write docs/cli.md and docs/settings.md from the programs' own parsers and `Settings`: `make docs`.

The text is built from the parsers' actions and the settings' fields, never from argparse's help output
(which wraps to the terminal), and from the defaults that hold when no CLV_* variable is set, so it is
the same on every machine. tests/test_docs.py regenerates it and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import enum
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python docs/reference.py`: the programs live one folder up
    sys.path.insert(0, str(ROOT))

from pydantic.fields import FieldInfo  # noqa: E402

from clv.service.settings import Settings  # noqa: E402

CLI = ROOT / "docs" / "cli.md"
SETTINGS = ROOT / "docs" / "settings.md"
SOURCE = "clv/service/settings.py"
WIDTH = 100  # synopses are wrapped here, whatever the terminal

# Where a field has neither a description nor a comment in clv/service/settings.py: what the README said of it.
NOTES = {
    "data_dir": "the bank the service and the commands read: a flat folder or a partitioned bank",
    "model_dir": "the saved models; the service follows its `clv_model_latest`",
    "host": "where `python api.py` listens",
    "port": "where `python api.py` listens",
    "rate_limit": "per client address, per prediction request (a batch counts once)",
    "log_file": "the request log (rotating): one line per request",
    "max_body_bytes": "larger bodies get 413 before they are parsed",
    "first_run_customers": "customers of the demo bank that the first run generates into `data/`",
}

SETTINGS_MORE = """\
## More on some settings

- `CLV_HOST` is 127.0.0.1 by default: the service is reachable from this machine only. It asks no
  credential of its callers, so put it behind a gateway that authenticates before you listen wider.
- `CLV_RATE_LIMIT` is a budget per client address, and a batch request counts once. It lives in each
  process's memory unless `CLV_RATE_LIMIT_STORAGE` names Redis (`redis://host:6379`, or `rediss://`), which
  shares one budget per address between every worker and every replica.
- `CLV_WORKERS` > 1 runs that many uvicorn worker processes; their Prometheus metrics are summed
  (prometheus-client's multiprocess mode), and the drift window is one window shared by all of them (a
  file in their metrics folder).
- `CLV_MAX_CONNECTIONS` counts open connections and requests in flight per worker; past it every request,
  `/health` too, gets an immediate 503. `CLV_BODY_TIMEOUT_SECONDS`: a request whose body is not whole that
  long after it began gets 408, and its connection is closed.
- `CLV_CORS_ORIGINS` is empty by default, which keeps CORS closed: no browser page from another origin may
  call the API. List the origins that may, separated by commas.
- `CLV_TRAIN_ON_START`: with no model, the service trains a first one in the background while `/health`
  says 503. It generates a demo bank (`CLV_FIRST_RUN_CUSTOMERS` customers) only into the default data
  folder (`data`), never into a configured `CLV_DATA_DIR`: a configured folder without data gives 503 with
  a reason that says what to do. A broken model is reported, never retrained over.
- `CLV_METRICS=false` drops `/metrics`, the request and prediction series and the drift window.
- `CLV_DASK_SCHEDULER` is read by `model.py` and `data_gen.py`, where `--scheduler` overrides it
  ([operations](operations.md#a-bank-in-partitions-on-dask)).
"""


# ---- values as text ---------------------------------------------------------------------------------


def shown(value: Any) -> str:
    """A default as a reader would type it: no reprs, no machine's paths."""
    if value is None or value is False:  # no default, or a flag that is off
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple | list):
        return ",".join(shown(v) for v in value)
    return str(value)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{text}`" if text else ""


# ---- the command lines --------------------------------------------------------------------------------


def metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest if not action.option_strings else action.dest.upper()


def invocation(action: argparse.Action) -> str:
    """`--out OUT`, `--json`, `SRC`: the option as it is typed."""
    if not action.option_strings:
        return metavar(action)
    names = ", ".join(action.option_strings)
    return names if action.nargs == 0 else f"{names} {metavar(action)}"


def documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options and arguments, without -h and anything suppressed."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and a.help != argparse.SUPPRESS
    ]


def synopsis(command: str, actions: list[argparse.Action]) -> str:
    """The usage line, positional arguments first, wrapped at WIDTH under the command."""
    words = []
    for a in sorted(actions, key=lambda a: bool(a.option_strings)):  # stable: the parser's order otherwise
        typed = invocation(a) if not a.option_strings or a.nargs == 0 else f"{a.option_strings[0]} {metavar(a)}"
        if a.option_strings and a.nargs == 0:
            typed = a.option_strings[0]
        words.append(typed if a.required or not a.option_strings else f"[{typed}]")
    lines, line = [], command
    for word in words:
        if len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = " " * len(command)
        line += " " + word
    lines.append(line)
    return "\n".join(lines)


def options_table(actions: list[argparse.Action]) -> str:
    rows = ["| option | default | what |", "|---|---|---|"]
    for a in actions:
        default = "required" if a.required else code(shown(a.default))
        rows.append(f"| `{invocation(a)}` | {default} | {cell(a.help or '')} |")
    return "\n".join(rows)


def command_section(level: str, command: str, intro: str, parser: argparse.ArgumentParser) -> str:
    """A heading, what the command is for, its synopsis and the table of its options."""
    actions = documented(parser)
    parts = [f"{level} `python {command}`", ""]
    if intro:
        parts += [intro, ""]
    parts += ["```", synopsis(f"python {command}", actions), "```", "", options_table(actions), ""]
    return "\n".join(parts)


def sentence(text: str) -> str:
    """A parser's one-line help as a sentence."""
    return f"{text[0].upper()}{text[1:]}." if text else ""


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order `--help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield choice.dest, choice.help or "", action.choices[choice.dest]


def default_settings() -> Settings:
    """The settings with no CLV_* variable set: the defaults the parsers show on any machine."""
    return Settings.model_construct()


def data_gen_parser() -> argparse.ArgumentParser:
    """data_gen.py builds its parser inside `parse_args`: catch the parser there, before it reads anything."""
    import data_gen

    class Caught(Exception):
        def __init__(self, parser: argparse.ArgumentParser) -> None:
            self.parser = parser

    def catch(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise Caught(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", catch):
        try:
            data_gen.parse_args([])
        except Caught as caught:
            return caught.parser
    raise RuntimeError("data_gen.parse_args built no parser")


def module_docstring(path: Path) -> str:
    """A program's docstring, read without running it."""
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def cli_text() -> str:
    """docs/cli.md."""
    import model

    settings = default_settings()
    top = model.parser(settings)
    out = [
        "# The command line",
        "",
        "<!-- Generated by `make docs` (docs/reference.py) from the programs' parsers; edit those, not this file. -->",
        "",
        "Every option of the three programs, with its default and its help. Every command also takes `-h` /",
        "`--help`. A bad option, or an input that breaks the data contract, prints one line",
        "(`model.py train: error: ...`) and exits with code 2. The folders' defaults are those of the settings",
        "(`CLV_DATA_DIR`, `CLV_MODEL_DIR`, `CLV_SCORES_DIR`, shown here unset; [settings](settings.md)); a flag",
        "overrides the variable. What the commands do with the data is in [data](data.md) and",
        "[model](model.md); where they run, in [operations](operations.md).",
        "",
        command_section("##", "data_gen.py", module_docstring(ROOT / "data_gen.py"), data_gen_parser()),
        "## `python model.py COMMAND`",
        "",
        module_docstring(ROOT / "model.py"),
        "",
        "| command | what |",
        "|---|---|",
    ]
    out += [f"| [`{name}`](#python-modelpy-{name}) | {cell(help_)} |" for name, help_, _ in subcommands(top)]
    out.append("")
    for _, help_, sub in subcommands(top):
        out.append(command_section("###", sub.prog, sentence(help_), sub))
    out += api_section(settings)
    return "\n".join(out).rstrip() + "\n"


def api_section(settings: Settings) -> list[str]:
    """api.py takes no options: how it runs, and the settings it passes to uvicorn."""
    rows = []
    for name in ("host", "port", "workers", "max_connections"):
        what = describe(name, Settings.model_fields[name])
        rows.append(f"| `{env_name(name)}` | {code(shown(getattr(settings, name)))} | {cell(what)} |")
    return [
        "## `python api.py`",
        "",
        "`python api.py` (or `make run`) serves the service: the JSON API, the page at `/` and the API's",
        "documentation at `/docs`. At start it serves the latest model of `CLV_MODEL_DIR`; when there is none, it",
        "trains a first one in the background (`CLV_TRAIN_ON_START`) while `/health` answers 503 with the reason.",
        "Its endpoints and answers are in [operations](operations.md).",
        "",
        "It takes no options: the settings configure it, from `CLV_*` environment variables",
        "([settings](settings.md)). `make run` starts it on `data/` and `models/` after generating the default",
        "bank when there is none. The settings that decide how uvicorn serves it:",
        "",
        "| variable | default | what |",
        "|---|---|---|",
        *rows,
        "",
        "With `CLV_WORKERS` > 1 it runs that many uvicorn worker processes, which share one metrics folder.",
        "",
        "### `python api.py keys`",
        "",
        "`python api.py keys add NAME [--scopes clv:predict,...]` makes an API key and prints it once, alone on the",
        "last line; `keys list` shows the keys' names, scopes and creation times, never a key; `keys revoke NAME`",
        "removes one, refused by a running service within `CLV_RELOAD_SECONDS`. The keys file is",
        "`CLV_API_KEYS_FILE`; the scopes are `clv:predict`, `clv:portfolio`, `clv:read` and `clv:metrics`",
        "([operations: Security](operations.md#security)).",
    ]


# ---- the settings --------------------------------------------------------------------------------------


def env_name(field: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def source_comments(cls: type) -> dict[str, str]:
    """`name: type = value  # comment` in the class's source: the comment of each field that has one."""
    import inspect

    found = {}
    for line in inspect.getsource(cls).splitlines():
        head, _, comment = line.partition("  # ")
        name = head.strip().split(":")[0]
        if comment and name.isidentifier() and name in cls.model_fields:
            found[name] = comment.strip()
    return found


def describe(name: str, field: FieldInfo) -> str:
    return field.description or source_comments(Settings).get(name) or NOTES.get(name, "")


def type_name(annotation: object) -> str:
    """`int` as "integer", `str | None` as "text, or none", `Literal["a", "b"]` as "one of `a`, `b`"."""
    args = typing.get_args(annotation)
    if type(None) in args:
        return ", or ".join([*(type_name(a) for a in args if a is not type(None)), "none"])
    if len(args) > 1 and typing.get_origin(annotation) is not typing.Literal:  # a union: each of its kinds
        return ", or ".join(type_name(a) for a in args)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if isinstance(annotation, type):
        names = {
            "Path": "path",
            "str": "text",
            "int": "integer",
            "float": "number",
            "bool": "true/false",
            "WarehouseURL": "postgresql:// URL",
        }
        return names.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("pathlib.", "")


def bounds(field: FieldInfo) -> str:
    """`ge`, `gt`, `le`, `lt` of a field, as a reader says them."""
    said = {
        "ge": "at least {}",
        "gt": "over {}",
        "le": "at most {}",
        "lt": "under {}",
    }
    parts = [said[k].format(getattr(m, k)) for m in field.metadata for k in said if getattr(m, k, None) is not None]
    return ", ".join(parts)


def setting_default(field: FieldInfo) -> str:
    """The default as text; one computed when the program starts (a core count, say) is said so, not shown."""
    factory: Callable[[], object] | None = field.default_factory  # type: ignore[assignment]
    if factory is not None:
        doc = (factory.__doc__ or "").strip().splitlines()
        return "computed at start" + (f": {doc[0]}" if doc else "")
    value = field.default
    if isinstance(value, bool):
        return code(str(value).lower())
    if value is None:
        return "none"
    if value == "":
        return "empty"
    return code(shown(value))


def settings_text() -> str:
    """docs/settings.md."""
    rows = ["| variable | type | default | allowed | what |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(
            f"| `{env_name(name)}` | {cell(type_name(field.annotation))} | {setting_default(field)} | "
            f"{bounds(field)} | {cell(describe(name, field))} |"
        )
    return (
        "\n".join(
            [
                "# Settings",
                "",
                f"<!-- Generated by `make docs` (docs/reference.py) from {SOURCE}; edit that, not this file. -->",
                "",
                "Every setting has a working default, so `make run` needs no `.env`. An environment variable",
                f"`{env_name('')}<NAME>` overrides the default, and a command-line flag, where a command has one",
                "([command line](cli.md)), overrides both. A value that cannot be used stops the program before it",
                "starts, with one line naming the variable and exit code 2",
                "(`api.py: error: CLV_RATE_LIMIT='lots': 'lots' is not a rate limit such as '120/minute'`).",
                "",
                *rows,
                "",
                SETTINGS_MORE.rstrip(),
            ]
        )
        + "\n"
    )


# ---- the files ----------------------------------------------------------------------------------------

GENERATED: dict[Path, Callable[[], str]] = {CLI: cli_text, SETTINGS: settings_text}


def main() -> int:
    for path, text in GENERATED.items():
        new = text()
        if path.exists() and path.read_text() == new:
            print(f"{path.relative_to(ROOT)}: up to date")
            continue
        path.write_text(new)
        print(f"{path.relative_to(ROOT)}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
