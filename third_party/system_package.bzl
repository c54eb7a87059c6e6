"""Wraps an installed Debian package for Bazel.

Only the package's own files (from `dpkg-query -L`) are linked into the repository: pointing a
repository at all of /usr/include makes glibc's headers resolve through it, which Bazel's include
checker then rejects as undeclared inclusions.
"""

def _system_package_impl(rctx):
    pkg = rctx.attr.package
    res = rctx.execute(["sh", "-c", 'dpkg-query -L "$1" | while read -r f; do [ -f "$f" ] && echo "$f"; done', "sh", pkg])
    if res.return_code != 0 or not res.stdout.strip():
        fail("The Debian package %s is not installed; run: apt-get install %s" % (pkg, pkg))
    linked = 0
    for path in res.stdout.splitlines():
        for prefix, dest in [("/usr/include/", "include/"), ("/usr/lib/x86_64-linux-gnu/", "lib/"), ("/usr/lib/", "lib/")]:
            if path.startswith(prefix) and "/cmake/" not in path and "/pkgconfig/" not in path:
                rctx.symlink(path, dest + path[len(prefix):])
                linked += 1
                break
    if linked == 0:
        fail("The Debian package %s installed no headers or libraries" % pkg)
    rctx.file("BUILD.bazel", rctx.read(rctx.attr.build_file))
    rctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % rctx.name)

system_package = repository_rule(
    implementation = _system_package_impl,
    attrs = {
        "package": attr.string(mandatory = True, doc = "Debian package name"),
        "build_file": attr.label(mandatory = True, allow_single_file = True),
    },
    local = True,
)
