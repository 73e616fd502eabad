// Streaming byte and line readers over plain or zstd-compressed files, used by `mor data prepare`
// and the BPE trainer. Errors are SourceError (a reason without the file position); the caller adds
// "<file>:<line>: " and turns it into mor::Error.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mor::core {

// What went wrong while reading, without the file name or line (the caller knows those).
// at_line: the error belongs to a position in the data (corrupt zstd), not to the whole file
// (cannot open, read error), so the caller names the line.
class SourceError : public std::runtime_error {
 public:
  explicit SourceError(const std::string& what, bool at_line = false) : std::runtime_error(what), at_line_(at_line) {}
  bool at_line() const { return at_line_; }

 private:
  bool at_line_;
};

// Reads a file in blocks; with `zstd`, decompresses a (possibly multi-frame) zstd stream.
class ByteSource {
 public:
  // Throws SourceError("cannot open: <reason>").
  ByteSource(const std::string& path, bool zstd);
  ~ByteSource();
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Appends the next block of (decompressed) bytes to `out`; false when the file is exhausted.
  // Throws SourceError for read errors and corrupt or truncated zstd data.
  bool read_more(std::string& out);
  // Bytes consumed from the file so far (compressed bytes for zstd).
  int64_t bytes_consumed() const { return consumed_; }

 private:
  bool fill_input();

  int fd_ = -1;
  bool zstd_ = false;
  void* dctx_ = nullptr;  // ZSTD_DCtx
  std::string in_buf_;
  size_t in_pos_ = 0;
  size_t in_size_ = 0;
  size_t last_ret_ = 0;  // last ZSTD_decompressStream result; 0 = at a frame boundary
  bool eof_ = false;
  int64_t consumed_ = 0;
};

// Splits a ByteSource into lines ('\n'; a final line without '\n' counts; '\r' is kept).
class LineReader {
 public:
  LineReader(const std::string& path, bool zstd) : source_(path, zstd) {}
  // The next line, valid until the next call; false at the end.
  bool next(std::string_view& line);
  int64_t line_number() const { return line_; }  // 1-based number of the line last returned
  int64_t bytes_consumed() const { return source_.bytes_consumed(); }

 private:
  ByteSource source_;
  std::string buf_;
  size_t pos_ = 0;
  bool done_ = false;
  int64_t line_ = 0;
};

// The whole (decompressed) file.
std::string read_all(const std::string& path, bool zstd);

// True when the line holds only ASCII whitespace.
bool is_blank(std::string_view line);

}  // namespace mor::core
