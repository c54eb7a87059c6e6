#!/bin/sh
echo "bazel coverage is not supported offline in this workspace (no remote_coverage_tools)" >&2
exit 1
