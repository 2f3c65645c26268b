"""KFP Python components (`@dsl.component`) as the local executor runs them.

kfp compiles a Python function into a container whose command bootstraps itself: a shell
script pip-installs `packages_to_install` and kfp, then starts kfp's executor,
`python3 -m kfp.dsl.executor_main`, with `--executor_input {{$}} --function_to_execute
<name>` as the container's args. Two shapes:

- lightweight (the image is the `base_image`, e.g. python:3.11): the function's source is
  the last word of the command, and a second `sh -ec` script writes it to
  `ephemeral_component.py` and passes that file as `--component_module_path`;
- containerized (`target_image`, built by `kfp component build`): the command is the
  executor alone, which finds the function's module through the image's `kfp_config.ini`.

The local executor recognises both (`recognise`) and runs the executor itself with the
project's interpreter, which has kfp: no shell, no pip, no download at run time. What
`packages_to_install` asks for must therefore be installed already; `unsatisfied` says what
is not, and CreateRun refuses such a pipeline (backends/local_checks.py). kfp itself is the
bootstrap, not a dependency: the project's kfp runs every component.

Import-light on purpose (no kfp; packaging only when checking): CreateRun's checks use it
before the executor is loaded.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KFP_EXECUTOR_MODULE = "kfp.dsl.executor_main"
"""The module kfp's Python components run (`python3 -m kfp.dsl.executor_main`)."""
LIGHTWEIGHT_MODULE_FILE = "ephemeral_component.py"
"""Where kfp's lightweight bootstrap writes the function's source."""

_PIP_SCRIPT_END = '"$0" "$@"'
"""How kfp's pip script ends: it then runs the rest of the command."""
_PIP_INSTALL = ("python3", "-m", "pip", "install")
_PIP_OPTIONS_WITH_VALUE = frozenset(
    {"--index-url", "-i", "--extra-index-url", "--trusted-host", "--find-links", "-f"}
)
_PYTHONS = frozenset({"python", "python3"})
_BOOTSTRAP_PACKAGE = "kfp"


@dataclass(frozen=True)
class PythonComponent:
    """A recognised KFP Python component: what to run instead of its bootstrap."""

    requirements: tuple[str, ...]
    """`packages_to_install`, as the pip script names them (kfp's own install left out)."""
    source: str | None
    """A lightweight component's module source; None for a containerized one, whose module
    is in its image folder."""
    args: tuple[str, ...]
    """The executor's arguments, still with their placeholders: the container's args."""

    @property
    def lightweight(self) -> bool:
        return self.source is not None


def recognise(command: Sequence[str], args: Sequence[str]) -> PythonComponent | None:
    """The Python component kfp compiled into this container command, or None when the
    command is anything else (a container component, a classic component.yaml)."""
    rest = list(command)
    requirements: tuple[str, ...] = ()
    if len(rest) >= 3 and rest[:2] == ["sh", "-c"] and _is_pip_script(rest[2]):
        requirements = tuple(_pip_requirements(rest[2]))
        rest = rest[3:]
    if (
        len(rest) == 4
        and rest[:2] == ["sh", "-ec"]
        and LIGHTWEIGHT_MODULE_FILE in rest[2]
        and f"-m {KFP_EXECUTOR_MODULE}" in rest[2]
    ):
        return PythonComponent(requirements, rest[3], tuple(args))
    if len(rest) == 3 and rest[0] in _PYTHONS and rest[1:] == ["-m", KFP_EXECUTOR_MODULE]:
        return PythonComponent(requirements, None, tuple(args))
    return None


def _is_pip_script(script: str) -> bool:
    return script.strip().endswith(_PIP_SCRIPT_END) and " ".join(_PIP_INSTALL) in script


def _pip_requirements(script: str) -> Iterable[str]:
    """The packages of every `python3 -m pip install ...` in kfp's script, options left
    out, but for kfp's own install (`'kfp==<version>' --no-deps ...`, which kfp adds)."""
    try:
        words = shlex.split(script)
    except ValueError:
        return
    index = 0
    while index < len(words):
        if tuple(words[index : index + len(_PIP_INSTALL)]) != _PIP_INSTALL:
            index += 1
            continue
        index += len(_PIP_INSTALL)
        packages: list[str] = []
        options: set[str] = set()
        while index < len(words) and words[index] != "&&":
            word = words[index]
            index += 1
            if word in _PIP_OPTIONS_WITH_VALUE:
                index += 1
            elif word.startswith("-"):
                options.add(word)
            else:
                packages.append(word)
        if not (packages and _is_kfp(packages[0]) and "--no-deps" in options):
            yield from packages


def _is_kfp(requirement: str) -> bool:
    name = re.split(r"[\s;@\[<>=!~]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-") == _BOOTSTRAP_PACKAGE


@dataclass(frozen=True)
class Unsatisfied:
    """A requirement the service's environment does not meet, and why."""

    requirement: str
    reason: str

    def __str__(self) -> str:
        return f"{self.requirement} ({self.reason})"


def unsatisfied(requirements: Iterable[str]) -> list[Unsatisfied]:
    """The requirements the installed packages do not satisfy (read with
    importlib.metadata from this interpreter's environment, which steps run in).

    A requirement whose environment marker is false here is met; kfp is always met (the
    project's kfp runs every component); a URL or a path cannot be checked, so it is not.
    """
    # Imported here: the service's start imports this module, and only CreateRun needs them.
    import importlib.metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    missing: list[Unsatisfied] = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            missing.append(Unsatisfied(text, "not a name and version this service can check"))
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        if canonicalize_name(requirement.name) == _BOOTSTRAP_PACKAGE:
            continue
        if requirement.url:
            missing.append(Unsatisfied(text, "a URL, which is never installed at run time"))
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(Unsatisfied(text, "not installed"))
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(Unsatisfied(text, f"{installed} is installed"))
    return missing
