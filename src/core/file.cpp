// POSIX implementations of the file helpers (mor/core/file.h).
#include "mor/core/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "mor/core/error.h"

namespace mor::core {

namespace {

std::string reason(int err) { return std::strerror(err); }

// Closes a descriptor on scope exit.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

std::string parent_directory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some file systems do not allow opening directories
  ::fsync(fd);
  ::close(fd);
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool matches_extensions(const std::string& path, const std::vector<std::string>& extensions) {
  if (extensions.empty()) return true;
  return std::any_of(extensions.begin(), extensions.end(),
                     [&](const std::string& ext) { return ends_with(path, ext); });
}

void walk_directory(const std::string& dir, const std::vector<std::string>& extensions,
                    std::vector<std::string>& out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) fail("cannot read directory ", dir, ": ", reason(errno));
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(d)) {
    if (entry->d_name[0] == '.') continue;  // ".", ".." and hidden entries
    names.emplace_back(entry->d_name);
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) fail("cannot read directory ", dir, ": ", reason(err));
  std::sort(names.begin(), names.end());
  const std::string prefix = (!dir.empty() && dir.back() == '/') ? dir : dir + "/";
  for (const auto& name : names) {
    const std::string path = prefix + name;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // dangling symlink or a file removed meanwhile
    if (S_ISDIR(st.st_mode)) {
      walk_directory(path, extensions, out);
    } else if (S_ISREG(st.st_mode) && matches_extensions(path, extensions)) {
      out.push_back(path);
    }
  }
}

}  // namespace

bool ends_with(std::string_view name, std::string_view suffix) {
  return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
}

std::string read_file(const std::string& path) {
  FdGuard g{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (g.fd < 0) fail("cannot read ", path, ": ", reason(errno));
  struct stat st {};
  if (::fstat(g.fd, &st) != 0) fail("cannot read ", path, ": ", reason(errno));
  if (S_ISDIR(st.st_mode)) fail("cannot read ", path, ": it is a directory");
  std::string out;
  if (st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(g.fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot read ", path, ": ", reason(errno));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

void atomic_write(const std::string& path, std::string_view bytes) {
  const std::string tmp = path + ".tmp";
  FdGuard g{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (g.fd < 0) fail("cannot write ", tmp, ": ", reason(errno));
  auto abort_with = [&](const char* what, int err) {
    ::close(g.fd);
    g.fd = -1;
    ::unlink(tmp.c_str());
    fail("cannot ", what, " ", tmp, ": ", reason(err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(g.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      abort_with("write", errno);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(g.fd) != 0) abort_with("fsync", errno);
  if (::close(g.fd) != 0) {
    g.fd = -1;
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot write ", tmp, ": ", reason(err));
  }
  g.fd = -1;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename ", tmp, " to ", path, ": ", reason(err));
  }
  fsync_directory(parent_directory(path));
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot stat ", path, ": ", reason(errno));
  return static_cast<int64_t>(st.st_size);
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_directories(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  const auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_directories(path.substr(0, slash));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    fail("cannot create directory ", path, ": ", reason(errno));
  }
  if (!is_directory(path)) fail("cannot create directory ", path, ": a file of that name exists");
}

namespace {
int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
}  // namespace

void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) return;
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
    fail("cannot remove ", path, ": ", std::strerror(errno));
}

bool remove_file(const std::string& path) noexcept {
  return ::unlink(path.c_str()) == 0 || errno == ENOENT;
}

// ---- MappedFile ------------------------------------------------------------------------------

MappedFile MappedFile::open(const std::string& path) {
  MappedFile m;
  m.path_ = path;
  FdGuard g{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (g.fd < 0) fail("cannot open ", path, ": ", reason(errno));
  struct stat st {};
  if (::fstat(g.fd, &st) != 0) fail("cannot open ", path, ": ", reason(errno));
  if (!S_ISREG(st.st_mode)) fail("cannot open ", path, ": not a regular file");
  m.size_ = static_cast<size_t>(st.st_size);
  if (m.size_ == 0) return m;
  void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, g.fd, 0);
  if (p == MAP_FAILED) fail("cannot map ", path, ": ", reason(errno));
  m.data_ = static_cast<const std::byte*>(p);
  return m;  // the mapping stays valid after the descriptor is closed
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    reset();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() { reset(); }

void MappedFile::reset() noexcept {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

// ---- listing ---------------------------------------------------------------------------------

std::vector<std::string> list_directory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) fail("cannot read directory ", dir, ": ", reason(errno));
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(d)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> list_files(const std::string& pattern, const std::vector<std::string>& extensions) {
  std::vector<std::string> out;
  struct stat st {};
  if (::stat(pattern.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      walk_directory(pattern, extensions, out);
      std::sort(out.begin(), out.end());
    } else {
      out.push_back(pattern);
    }
    return out;
  }
  if (!has_glob_chars(pattern)) fail("no such file or directory: ", pattern);
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  if (rc == GLOB_NOMATCH) {
    ::globfree(&g);
    fail("no files match ", pattern);
  }
  if (rc != 0) {
    ::globfree(&g);
    fail("cannot expand ", pattern, ": read error");
  }
  std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  ::globfree(&g);
  std::sort(matches.begin(), matches.end());
  for (const auto& m : matches) {
    if (::stat(m.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk_directory(m, extensions, out);
    } else if (S_ISREG(st.st_mode) && matches_extensions(m, extensions)) {
      out.push_back(m);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace mor::core
