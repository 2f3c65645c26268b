"""The Python toolchain: the project's virtualenv, located when the workspace loads.

`make` creates .venv with every locked dependency; py_binary and py_test targets run on
that interpreter instead of whatever `python3` is first on PATH. Set SKIT_PYTHON to use
another interpreter (a virtualenv's bin/python with the same packages).
"""

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "runtime",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(rctx):
    override = rctx.os.environ.get("SKIT_PYTHON", "")
    if override:
        interpreter = rctx.path(override)
    else:
        workspace = rctx.path(Label("@//:WORKSPACE")).dirname
        interpreter = workspace.get_child(rctx.attr.venv).get_child("bin").get_child("python")
    if not interpreter.exists:
        fail("no Python at %s: run `make` first (it creates %s/), or set SKIT_PYTHON" % (
            interpreter,
            rctx.attr.venv,
        ))
    probe = rctx.execute([interpreter, "-c", rctx.attr.probe])
    if probe.return_code != 0:
        fail("%s cannot import the project's test and build dependencies (run `make`):\n%s" % (
            interpreter,
            probe.stderr,
        ))
    rctx.file("WORKSPACE", "")
    rctx.file("BUILD.bazel", _BUILD.format(interpreter = str(interpreter)))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    attrs = {
        "venv": attr.string(
            default = ".venv",
            doc = "The virtualenv directory, relative to the workspace root.",
        ),
        "probe": attr.string(
            default = "import grpc_tools.protoc, kfp, pytest",
            doc = "Python that must run on the interpreter for it to be usable.",
        ),
    },
    environ = ["SKIT_PYTHON"],
    local = True,
    doc = "Registers the project's virtualenv Python as the py_runtime toolchain.",
)
