// memfs's handlers driven in-process through the test kit (corofuse/testing.hpp), with real request
// bytes in both arrival forms: no mount, no root. README's "Testing a filesystem" shows this test.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

// memfs itself, its main renamed (examples/memfs/memfs.cpp is not changed).
#define main memfs_main
#include "examples/memfs/memfs.cpp"
#undef main

#include "corofuse/testing.hpp"

namespace abi = corofuse::abi;
namespace testing = corofuse::testing;
namespace request = corofuse::testing::request;

TEST_CASE("memfs through the test kit: create, write, read, list, stat, unlink", "[testing][memfs]") {
  const auto via = GENERATE(testing::arrival::dev_fuse, testing::arrival::ring);
  INFO((via == testing::arrival::ring ? "ring entries" : "/dev/fuse messages"));
  memfs fs(16 << 20);
  testing::driver<memfs> d(fs);
  d.set_caller(1000, 100);

  auto dir = d.send(request::mkdir(corofuse::root_ino, "docs", 0755), via);
  REQUIRE(dir.error == 0);
  const auto docs = dir.as<abi::entry_out>();
  CHECK((docs.attr.mode & S_IFMT) == S_IFDIR);
  CHECK(docs.attr.uid == 1000);  // the caller's

  auto made = d.send(request::create(docs.nodeid, "a.txt", S_IFREG | 0644, O_RDWR), via);
  REQUIRE(made.error == 0);
  REQUIRE(made.bytes.size() == sizeof(abi::entry_out) + sizeof(abi::open_out));
  const auto file = made.as<abi::entry_out>();
  abi::open_out opened;
  std::memcpy(&opened, made.bytes.data() + sizeof(abi::entry_out), sizeof opened);

  auto wrote = d.send(request::write(file.nodeid, opened.fh, 0, "hello, kit\n"), via);
  REQUIRE(wrote.error == 0);
  CHECK(wrote.as<abi::write_out>().size == 11);
  CHECK(d.send(request::read(file.nodeid, opened.fh, 7, 100), via).text() == "kit\n");
  CHECK(d.send(request::getattr(file.nodeid), via).as<abi::attr_out>().attr.size == 11);
  CHECK(d.send(request::release(file.nodeid, opened.fh), via).error == 0);

  auto found = d.send(request::lookup(docs.nodeid, "a.txt"), via);
  REQUIRE(found.error == 0);
  CHECK(found.as<abi::entry_out>().nodeid == file.nodeid);
  CHECK(d.send(request::lookup(docs.nodeid, "missing"), via).error == ENOENT);

  auto listing = d.send(request::opendir(docs.nodeid), via);
  REQUIRE(listing.error == 0);
  const auto dh = listing.as<abi::open_out>().fh;
  auto names = d.send(request::readdir(docs.nodeid, dh, 0), via).entries();
  REQUIRE(names.size() == 3);
  CHECK(names[0].name == ".");
  CHECK(names[1].name == "..");
  CHECK(names[2].name == "a.txt");
  CHECK(names[2].ino == file.nodeid);
  CHECK(d.send(request::readdir(docs.nodeid, dh, names[2].next_offset), via).entries().empty());
  CHECK(d.send(request::release(docs.nodeid, dh, true), via).error == 0);

  CHECK(d.send(request::rmdir(corofuse::root_ino, "docs"), via).error == ENOTEMPTY);
  CHECK(d.send(request::unlink(docs.nodeid, "a.txt"), via).error == 0);
  CHECK(d.send(request::lookup(docs.nodeid, "a.txt"), via).error == ENOENT);
  auto forgot = d.send(request::forget(file.nodeid, 2), via);
  CHECK_FALSE(forgot.answered);
  CHECK(d.send(request::rmdir(corofuse::root_ino, "docs"), via).error == 0);
}

TEST_CASE("memfs through the test kit: READDIRPLUS counts a lookup for each entry sent, and only those", "[testing]") {
  memfs fs(16 << 20);
  testing::driver<memfs> d(fs);
  auto dir = d.send(request::mkdir(corofuse::root_ino, "many", 0755)).as<abi::entry_out>();
  std::vector<std::uint64_t> nodes;
  for (int i = 0; i < 40; ++i) {
    auto made = d.send(request::create(dir.nodeid, "f" + std::to_string(i), S_IFREG | 0644, O_WRONLY));
    REQUIRE(made.error == 0);
    nodes.push_back(made.as<abi::entry_out>().nodeid);
    abi::open_out opened;
    std::memcpy(&opened, made.bytes.data() + sizeof(abi::entry_out), sizeof opened);
    CHECK(d.send(request::release(nodes.back(), opened.fh)).error == 0);
  }
  const auto dh = d.send(request::opendir(dir.nodeid)).as<abi::open_out>().fh;
  // Room for ".", "..", and ten files: the rest is asked for again from the last offset.
  const auto room = static_cast<std::uint32_t>(2 * abi::direntplus_size(2) + 10 * abi::direntplus_size(3) + 100);
  auto first = d.send(request::readdirplus(dir.nodeid, dh, 0, room)).plus_entries();
  REQUIRE(first.size() == 12);
  CHECK(first[0].lookup.nodeid == 0);  // "." and "..": no attributes, nothing counted
  CHECK(first[1].lookup.nodeid == 0);
  CHECK(first[1].ino == corofuse::root_ino);
  for (std::size_t k = 2; k < first.size(); ++k) {
    CHECK(first[k].lookup.nodeid == first[k].ino);
    CHECK((first[k].lookup.attr.mode & S_IFMT) == S_IFREG);
  }
  std::size_t listed = first.size() - 2;
  for (std::uint64_t off = first.back().next_offset;;) {
    auto more = d.send(request::readdirplus(dir.nodeid, dh, off, room)).plus_entries();
    if (more.empty()) break;
    listed += more.size();
    off = more.back().next_offset;
  }
  CHECK(listed == 40);
  CHECK(d.send(request::release(dir.nodeid, dh, true)).error == 0);

  // Each file now holds two lookups (mknod's and the listing's): unlinked and forgotten once, it
  // is still known; forgotten the second time, it is gone.
  CHECK(d.send(request::unlink(dir.nodeid, "f0")).error == 0);
  d.send(request::forget(nodes[0], 1));
  CHECK(d.send(request::getattr(nodes[0])).error == 0);
  d.send(request::forget(nodes[0], 1));
  CHECK(d.send(request::getattr(nodes[0])).error == ENOENT);
}

TEST_CASE("the test kit answers a malformed request as the server does", "[testing]") {
  memfs fs(1 << 20);
  testing::driver<memfs> d(fs);
  testing::message cut = request::lookup(corofuse::root_ino, "name");
  cut.bytes.pop_back();  // the name loses its NUL
  cut.header().len -= 1;
  auto r = d.send(cut);
  CHECK(r.answered);
  CHECK(r.error == EINVAL);
  CHECK(r.bytes.empty());
}
