#!/bin/sh
# Coverage is not collected offline; this stands in for Bazel's downloaded tool.
exit 0
