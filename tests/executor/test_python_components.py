"""Recognising kfp's Python component bootstrap, and checking packages_to_install against
the installed environment."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import pytest
from kfp import dsl
from kfp.dsl import structures

from skit_pipelines.python_components import (
    KFP_EXECUTOR_MODULE,
    Unsatisfied,
    recognise,
    unsatisfied,
)


def container(component) -> structures.ContainerSpecImplementation:
    return component.component_spec.implementation.container


def command_of(component) -> tuple[list[str], list[str]]:
    spec = container(component)
    return [str(c) for c in spec.command], [str(a) for a in spec.args]


@dsl.component(base_image="python:3.11")
def plain(x: int) -> int:
    return x


@dsl.component(
    base_image="python:3.11",
    packages_to_install=["pandas>=2", "scikit-learn==1.5.0", 'tomli; python_version<"3.11"'],
    pip_index_urls=["https://pypi.example/simple", "https://mirror.example/simple"],
)
def with_packages(x: int) -> int:
    return x


@dsl.component(base_image="python:3.11", packages_to_install=["PyYAML"], use_venv=True)
def in_venv(x: int) -> int:
    return x


@dsl.component(
    base_image="python:3.11", target_image="registry.example/comp:1", packages_to_install=["numpy"]
)
def containerized(x: int) -> int:
    return x


@dsl.component(base_image="python:3.11", target_image="registry.example/comp:1")
def containerized_bare(x: int) -> int:
    return x


def test_a_lightweight_component_is_its_source_and_the_executors_args() -> None:
    command, args = command_of(plain)

    found = recognise(command, args)

    assert found is not None and found.lightweight
    assert found.requirements == (), "kfp itself is the bootstrap, not a requirement"
    assert "def plain(x: int) -> int:" in (found.source or "")
    assert found.args == ("--executor_input", "{{$}}", "--function_to_execute", "plain")


def test_packages_to_install_are_read_without_pip_options() -> None:
    found = recognise(*command_of(with_packages))

    assert found is not None and found.lightweight
    assert found.requirements == (
        "pandas>=2",
        "scikit-learn==1.5.0",
        'tomli; python_version<"3.11"',
    )
    venv = recognise(*command_of(in_venv))
    assert venv is not None and venv.requirements == ("PyYAML",)


def test_a_containerized_component_is_the_executor_alone() -> None:
    found = recognise(*command_of(containerized))
    bare = recognise(*command_of(containerized_bare))

    assert found is not None and not found.lightweight and found.requirements == ("numpy",)
    assert bare is not None and not bare.lightweight and bare.requirements == ()
    assert command_of(containerized_bare)[0] == ["python3", "-m", KFP_EXECUTOR_MODULE]


@pytest.mark.parametrize(
    "command",
    [
        ["python3", "-m", "my_component"],
        ["sh", "-c", "pip install x && run"],
        ["sh", "-ec", "echo hi", "source"],
        [],
    ],
)
def test_anything_else_is_not_a_python_component(command: list[str]) -> None:
    assert recognise(command, []) is None


def test_unsatisfied_packages_say_why() -> None:
    found = unsatisfied(
        [
            "PyYAML>=5",
            "packaging",
            "kfp==0.1",  # the bootstrap: the project's kfp runs every component
            'tomli; python_version<"3.0"',  # a marker false here
            "surely-not-installed-pkg",
            "PyYAML<1",
            "git+https://example.com/repo.git",
            "pkg @ https://example.com/pkg.whl",
        ]
    )

    assert [(u.requirement, u.reason.split()[0]) for u in found] == [
        ("surely-not-installed-pkg", "not"),
        ("PyYAML<1", found[1].reason.split()[0]),
        ("git+https://example.com/repo.git", "not"),
        ("pkg @ https://example.com/pkg.whl", "a"),
    ]
    assert found[1].reason.endswith("is installed")
    assert str(Unsatisfied("x", "not installed")) == "x (not installed)"
