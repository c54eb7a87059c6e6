"""corofuse's dependencies, for a Bazel workspace that uses it (and for corofuse's own WORKSPACE).

In a WORKSPACE:

    local_repository(name = "corofuse", path = "/path/to/corofuse")   # or any repository rule
    load("@corofuse//:deps.bzl", "corofuse_dependencies")
    corofuse_dependencies()

then depend on "@corofuse//:corofuse". It declares liburing and range-v3 from the Debian packages
installed on the machine (apt-get install liburing-dev librange-v3-dev), and, unless the workspace
has them already, offline stand-ins for rules_cc, rules_java and remote_coverage_tools: Debian's
Bazel 4.2.3 (bazel-bootstrap) otherwise downloads those. A repository the workspace declared
before the call is left as it is.
"""

load("//third_party:system_package.bzl", "system_package")

def _stand_in_impl(rctx):
    # Links the files of one of corofuse's offline stand-ins (third_party/bazel/NAME).
    src = rctx.path(rctx.attr.marker).dirname
    for child in src.readdir():
        rctx.symlink(child, child.basename)

_stand_in = repository_rule(
    implementation = _stand_in_impl,
    attrs = {"marker": attr.label(mandatory = True, allow_single_file = True, doc = "the stand-in's WORKSPACE file")},
    local = True,
)

def corofuse_dependencies(test_only = False):
    """Declares what @corofuse//:corofuse needs; test_only adds Catch2 (corofuse's own tests)."""
    existing = native.existing_rules()
    for name in ["rules_cc", "rules_java", "remote_coverage_tools"]:
        if name not in existing:
            _stand_in(name = name, marker = Label("//third_party/bazel/%s:WORKSPACE" % name))
    if "liburing" not in existing:
        system_package(name = "liburing", package = "liburing-dev", build_file = Label("//third_party:liburing.BUILD"))
    if "range_v3" not in existing:
        system_package(name = "range_v3", package = "librange-v3-dev", build_file = Label("//third_party:range_v3.BUILD"))
    if test_only and "catch2" not in existing:
        system_package(name = "catch2", package = "catch2", build_file = Label("//third_party:catch2.BUILD"))
