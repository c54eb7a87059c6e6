// The fuzz targets' main outside libFuzzer (a g++ or plain clang build): replays every file in
// the directories (or the files) named on the command line through LLVMFuzzerTestOneInput, so
// the seed corpus and every crash input kept as a regression run in the normal `bazel test //...`.
// A failing input aborts (FUZZ_CHECK, or a sanitizer under --config=asan); before each input its
// name is printed, so the log says which one. Each argument counts as one case in the closing
// "N passed, N failed". Files named README* are skipped; a missing argument fails.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  int passed = 0, failed = 0;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg = argv[i];
    std::vector<fs::path> files;
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      for (const auto& e : fs::directory_iterator(arg, ec))
        if (e.is_regular_file() && e.path().filename().string().rfind("README", 0) != 0) files.push_back(e.path());
    } else if (fs::is_regular_file(arg, ec)) {
      files.push_back(arg);
    } else {
      std::printf("replay: FAIL %s: no such file or directory\n", argv[i]);
      ++failed;
      continue;
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::printf("replay: %s (%zu bytes)\n", f.c_str(), bytes.size());
      std::fflush(stdout);
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    std::printf("replay: PASS %s (%zu inputs)\n", argv[i], files.size());
    ++passed;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
