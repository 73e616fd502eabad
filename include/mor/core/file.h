// Small POSIX file helpers shared by the io and data layers: whole-file reads with clear errors,
// atomic writes, read-only memory maps and sorted file listings.
// Invariants: every failure throws mor::Error naming the path and the system reason; atomic_write
// never leaves a partially written file under the final name (it writes "<path>.tmp", fsyncs and
// renames); list_files returns the same order for the same tree on every run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mor::core {

// The whole file as bytes. Throws "cannot read <path>: <reason>".
std::string read_file(const std::string& path);

// Writes `bytes` to "<path>.tmp", fsyncs it, renames it to `path` and fsyncs the directory.
// On failure the temporary file is removed and `path` is left as it was.
void atomic_write(const std::string& path, std::string_view bytes);

// Size of a regular file in bytes; throws when it cannot be stat'ed.
int64_t file_size(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
// Creates `path` and its parents (like mkdir -p); throws naming the path on failure.
void make_directories(const std::string& path);
// Removes a file if it exists; returns false (never throws) when it could not be removed.
bool remove_file(const std::string& path) noexcept;
// Removes a file or a directory tree (like rm -rf; symlinks are not followed). A missing path is
// fine; throws "cannot remove <path>: <reason>" otherwise. (POSIX nftw: std::filesystem::remove_all
// must not be used in binaries that link LibTorch, whose exported copy of it crashes.)
void remove_tree(const std::string& path);

// A read-only, private memory map of a whole file. Empty files map to {nullptr, 0}.
class MappedFile {
 public:
  MappedFile() = default;
  // Throws "cannot open <path>: <reason>" / "cannot map <path>: <reason>".
  static MappedFile open(const std::string& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }
  const std::string& path() const { return path_; }

 private:
  void reset() noexcept;
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Regular files named by `pattern`, sorted byte-wise by path:
//   - a directory: every file below it, recursively (hidden files and directories, i.e. names
//     starting with '.', are skipped);
//   - a glob (contains *, ? or [): the matching files (directories among the matches are expanded
//     as above);
//   - a file: that file.
// `extensions` (e.g. {".bin"} or {".jsonl", ".jsonl.zst"}) filters by name suffix; empty keeps all.
// An explicitly named file is kept whatever its extension. Throws when `pattern` names nothing
// that exists, or a directory cannot be read.
std::vector<std::string> list_files(const std::string& pattern, const std::vector<std::string>& extensions = {});

// Names of the entries of one directory (not recursive; "." and ".." excluded), sorted.
std::vector<std::string> list_directory(const std::string& dir);

// True when `name` ends with `suffix`.
bool ends_with(std::string_view name, std::string_view suffix);

}  // namespace mor::core
