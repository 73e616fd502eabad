// Streaming readers for plain and zstd-compressed files (text_source.h).
#include "mor/core/text_source.h"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>

namespace mor::core {

namespace {
constexpr size_t kPlainBlock = size_t{1} << 20;
}  // namespace

ByteSource::ByteSource(const std::string& path, bool zstd) : zstd_(zstd) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw SourceError(std::string("cannot open: ") + std::strerror(errno));
  if (zstd_) {
    dctx_ = ZSTD_createDCtx();
    if (dctx_ == nullptr) throw SourceError("cannot create a zstd decompression context");
    in_buf_.resize(ZSTD_DStreamInSize());
  }
}

ByteSource::~ByteSource() {
  if (fd_ >= 0) ::close(fd_);
  if (dctx_ != nullptr) ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx_));
}

bool ByteSource::fill_input() {
  for (;;) {
    const ssize_t n = ::read(fd_, in_buf_.data(), in_buf_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SourceError(std::string("read error: ") + std::strerror(errno));
    }
    in_pos_ = 0;
    in_size_ = static_cast<size_t>(n);
    consumed_ += n;
    if (n == 0) eof_ = true;
    return n > 0;
  }
}

bool ByteSource::read_more(std::string& out) {
  if (!zstd_) {
    const size_t old = out.size();
    out.resize(old + kPlainBlock);
    for (;;) {
      const ssize_t n = ::read(fd_, out.data() + old, kPlainBlock);
      if (n < 0) {
        if (errno == EINTR) continue;
        out.resize(old);
        throw SourceError(std::string("read error: ") + std::strerror(errno));
      }
      out.resize(old + static_cast<size_t>(n));
      consumed_ += n;
      return n > 0;
    }
  }
  auto* dctx = static_cast<ZSTD_DCtx*>(dctx_);
  for (;;) {
    if (in_pos_ == in_size_ && !eof_) fill_input();
    if (in_pos_ == in_size_ && eof_ && last_ret_ == 0) return false;
    const size_t old = out.size();
    const size_t cap = ZSTD_DStreamOutSize();
    out.resize(old + cap);
    ZSTD_outBuffer ob{out.data() + old, cap, 0};
    ZSTD_inBuffer ib{in_buf_.data(), in_size_, in_pos_};
    const size_t ret = ZSTD_decompressStream(dctx, &ob, &ib);
    out.resize(old + ob.pos);
    in_pos_ = ib.pos;
    if (ZSTD_isError(ret)) throw SourceError(std::string("corrupt zstd data: ") + ZSTD_getErrorName(ret), true);
    last_ret_ = ret;
    if (ob.pos > 0) return true;
    if (in_pos_ == in_size_ && eof_) {
      if (ret != 0) throw SourceError("truncated zstd stream (the file ends inside a frame)", true);
      return false;
    }
  }
}

bool LineReader::next(std::string_view& line) {
  for (;;) {
    if (pos_ < buf_.size()) {
      const void* nl = std::memchr(buf_.data() + pos_, '\n', buf_.size() - pos_);
      if (nl != nullptr) {
        const size_t end = static_cast<size_t>(static_cast<const char*>(nl) - buf_.data());
        line = std::string_view(buf_).substr(pos_, end - pos_);
        pos_ = end + 1;
        ++line_;
        return true;
      }
    }
    if (done_) {
      if (pos_ < buf_.size()) {
        line = std::string_view(buf_).substr(pos_);
        pos_ = buf_.size();
        ++line_;
        return true;
      }
      return false;
    }
    buf_.erase(0, pos_);
    pos_ = 0;
    if (!source_.read_more(buf_)) done_ = true;
  }
}

std::string read_all(const std::string& path, bool zstd) {
  ByteSource source(path, zstd);
  std::string out;
  while (source.read_more(out)) {
  }
  return out;
}

bool is_blank(std::string_view line) {
  for (const char c : line) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\f' && c != '\v') return false;
  }
  return true;
}

}  // namespace mor::core
