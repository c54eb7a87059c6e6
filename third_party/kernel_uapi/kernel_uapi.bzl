"""The kernel's own <linux/fuse.h> of Linux 7.3 or newer (protocol 7.46), for the ABI agreement test.

Debian 12's linux-libc-dev is far older (7.38), so the header comes from Debian's linux-libc-dev
of a 7.3+ kernel, downloaded by tools/debian-kernel into a cache outside the tree. The cache is
tried first with no network; a download is attempted only when it is empty. When neither works,
the repository still builds, but its header makes the agreement test fail with the reason: the
test must never pass without having compared anything.
"""

def _kernel_uapi_impl(rctx):
    script = rctx.path(Label("//tools:debian-kernel"))
    env = {"COROFUSE_OFFLINE": "1"}
    res = rctx.execute([str(script), "headers"], environment = env, timeout = 60)
    if res.return_code != 0:
        rctx.report_progress("downloading Linux 7.3+ linux-libc-dev into the corofuse cache")
        res = rctx.execute([str(script), "headers"], timeout = 1200)
    if res.return_code == 0:
        pkg_dir = str(rctx.path(res.stdout.strip().splitlines()[-1]).realpath)
        rctx.symlink(pkg_dir + "/usr/include/linux/fuse.h", "include/linux/fuse.h")
        version = pkg_dir.rstrip("/").split("/")[-1]
        rctx.file("include/kernel_uapi_status.h", "\n".join([
            "#pragma once",
            "#define COROFUSE_KERNEL_UAPI_AVAILABLE 1",
            "#define COROFUSE_KERNEL_UAPI_SOURCE \"linux-libc-dev %s\"" % version,
            "",
        ]))
        hdrs = ["include/linux/fuse.h", "include/kernel_uapi_status.h"]
    else:
        reason = (res.stderr.strip() or res.stdout.strip() or "tools/debian-kernel headers failed").replace("\\", "/").replace("\"", "'").replace("\n", " | ")
        rctx.file("include/kernel_uapi_status.h", "\n".join([
            "#pragma once",
            "#define COROFUSE_KERNEL_UAPI_AVAILABLE 0",
            "#define COROFUSE_KERNEL_UAPI_ERROR \"%s\"" % reason,
            "",
        ]))
        hdrs = ["include/kernel_uapi_status.h"]
    rctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % rctx.name)
    rctx.file("BUILD.bazel", "\n".join([
        "cc_library(",
        "    name = \"fuse_h\",",
        "    hdrs = %r," % hdrs,
        "    includes = [\"include\"],",
        "    visibility = [\"//visibility:public\"],",
        ")",
        "",
    ]))

kernel_uapi = repository_rule(
    implementation = _kernel_uapi_impl,
    environ = ["COROFUSE_CACHE", "COROFUSE_KERNEL_MIN", "XDG_CACHE_HOME", "HOME"],
    local = True,
)
