// memfs's handlers driven in-process through the test kit (corofuse/testing.hpp), with real request
// bytes in both arrival forms: no mount, no root. README's "Testing a filesystem" shows this test.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>

#include <string>

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
