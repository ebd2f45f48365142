#include "snapshot_store.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

namespace dinamo::daemon {
namespace {

// "DINAMOSS" then version (u32), payload length (u64), CRC-32 of the payload (u32); little endian.
constexpr char kMagic[8] = {'D', 'I', 'N', 'A', 'M', 'O', 'S', 'S'};
constexpr std::size_t kHeaderBytes = 8 + 4 + 8 + 4;

void PutLittle(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

std::uint64_t GetLittle(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  }
  return value;
}

// CRC-32 of IEEE 802.3 (the value boost::crc_32_type gives), from zlib: its table-driven
// implementation is several times faster than a bytewise one, which dominated the restore of a
// snapshot of 100 000 templates.
std::uint32_t Crc32(std::string_view data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  std::size_t n = data.size();
  // zlib takes lengths as uInt: feed very large payloads in pieces.
  constexpr std::size_t kPiece = std::size_t{1} << 30;
  for (; n > 0; p += std::min(n, kPiece), n -= std::min(n, kPiece)) {
    crc = crc32(crc, p, static_cast<uInt>(std::min(n, kPiece)));
  }
  return static_cast<std::uint32_t>(crc);
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Writes all of `bytes` to `fd`.
bool WriteAll(int fd, std::string_view bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Writes the pieces, one after the other, to a new file and fsyncs it.
std::optional<std::string> WriteDurably(const std::string& path,
                                        std::initializer_list<std::string_view> pieces) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Errno("open " + path);
  }
  for (std::string_view piece : pieces) {
    if (!WriteAll(fd, piece)) {
      const std::string why = Errno("write " + path);
      ::close(fd);
      return why;
    }
  }
  if (::fsync(fd) != 0) {
    const std::string why = Errno("fsync " + path);
    ::close(fd);
    return why;
  }
  if (::close(fd) != 0) {
    return Errno("close " + path);
  }
  return std::nullopt;
}

std::optional<std::string> SyncDirectory(const std::string& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Errno("open " + directory);
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) {
    return Errno("fsync " + directory);
  }
  return std::nullopt;
}

}  // namespace

namespace {

std::string HeaderFor(std::string_view payload) {
  std::string out(kMagic, sizeof kMagic);
  PutLittle(out, kSnapshotFormatVersion, 4);
  PutLittle(out, payload.size(), 8);
  PutLittle(out, Crc32(payload), 4);
  return out;
}

// A file mapped read-only (and read ahead) for as long as it lives: the payload is checked and
// parsed where the page cache has it, without a copy into a buffer of our own.
class MappedFile {
 public:
  MappedFile(const std::string& path, bool& existed, std::string& why) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    existed = fd >= 0 || errno != ENOENT;
    if (fd < 0) {
      why = Errno("open " + path);
      return;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      why = Errno("stat " + path);
    } else if (st.st_size > 0) {
      size_ = static_cast<std::size_t>(st.st_size);
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (p == MAP_FAILED) {
        why = Errno("mmap " + path);
        size_ = 0;
      } else {
        data_ = static_cast<const char*>(p);
      }
    }
    ::close(fd);
    ok_ = why.empty();
  }
  ~MappedFile() {
    if (data_ != nullptr) {
      ::munmap(const_cast<char*>(data_), size_);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  bool ok() const { return ok_; }
  std::string_view bytes() const { return {data_ == nullptr ? "" : data_, size_}; }

 private:
  const char* data_ = nullptr;
  std::size_t size_ = 0;
  bool ok_ = false;
};

}  // namespace

std::string EncodeSnapshotFile(std::string_view payload) {
  std::string out = HeaderFor(payload);
  out += payload;
  return out;
}

std::optional<std::string_view> DecodeSnapshotFile(std::string_view bytes, std::string& why) {
  if (bytes.size() < kHeaderBytes) {
    why = "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the header";
    return std::nullopt;
  }
  if (bytes.compare(0, sizeof kMagic, kMagic, sizeof kMagic) != 0) {
    why = "not a dinamod snapshot (bad magic)";
    return std::nullopt;
  }
  const auto version = GetLittle(bytes, 8, 4);
  if (version != kSnapshotFormatVersion) {
    why = "format version " + std::to_string(version) + ", this build reads " +
          std::to_string(kSnapshotFormatVersion);
    return std::nullopt;
  }
  const auto length = GetLittle(bytes, 12, 8);
  if (length != bytes.size() - kHeaderBytes) {
    why = "truncated or padded: header says " + std::to_string(length) +
          " payload bytes, file has " + std::to_string(bytes.size() - kHeaderBytes);
    return std::nullopt;
  }
  const std::string_view payload = bytes.substr(kHeaderBytes);
  if (Crc32(payload) != GetLittle(bytes, 20, 4)) {
    why = "checksum mismatch";
    return std::nullopt;
  }
  return payload;
}

SnapshotStore::SnapshotStore(std::string directory)
    : directory_(std::move(directory)),
      current_(directory_ + "/snapshot.pb"),
      previous_(directory_ + "/snapshot.prev.pb"),
      temporary_(directory_ + "/snapshot.pb.tmp") {}

std::shared_ptr<const v1::Snapshot> SnapshotStore::ReadOne(const std::string& path,
                                                           bool& existed, std::string& why) {
  const MappedFile file(path, existed, why);
  if (!file.ok()) {
    return nullptr;
  }
  const auto payload = DecodeSnapshotFile(file.bytes(), why);
  if (!payload) {
    return nullptr;
  }
  google::protobuf::ArenaOptions options;
  options.start_block_size = std::size_t{1} << 20;
  options.max_block_size = std::size_t{64} << 20;
  auto arena = std::make_shared<google::protobuf::Arena>(options);
  auto* snapshot = google::protobuf::Arena::CreateMessage<v1::Snapshot>(arena.get());
  if (payload->size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      !snapshot->ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
    why = "checksum holds but the payload is not a dinamo.v1.Snapshot";
    return nullptr;
  }
  return std::shared_ptr<const v1::Snapshot>(arena, snapshot);
}

std::optional<LoadedSnapshot> SnapshotStore::Load(int& problems, const Accept& accept) {
  problems = 0;
  current_valid_ = false;
  for (const std::string& path : {current_, previous_}) {
    bool existed = false;
    std::string why;
    auto snapshot = ReadOne(path, existed, why);
    if (snapshot && accept) {
      if (auto refused = accept(*snapshot)) {
        why = *refused;
        snapshot.reset();
      }
    }
    if (snapshot) {
      current_valid_ = path == current_;
      return LoadedSnapshot{std::move(snapshot), path};
    }
    if (existed) {
      ++problems;
      spdlog::error("snapshot refused file={} reason=\"{}\"", path, why);
    }
  }
  return std::nullopt;
}

std::optional<std::string> SnapshotStore::Write(const v1::Snapshot& snapshot) {
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  if (ec) {
    return "cannot create " + directory_ + ": " + ec.message();
  }
  std::string payload;
  if (!snapshot.SerializeToString(&payload)) {
    return "cannot serialise the snapshot";
  }
  if (auto why = WriteDurably(temporary_, {HeaderFor(payload), payload})) {
    return why;
  }
  // A damaged current file is not worth keeping as the fallback: it is overwritten instead.
  if (current_valid_ && ::rename(current_.c_str(), previous_.c_str()) != 0 && errno != ENOENT) {
    return Errno("rename " + current_ + " to " + previous_);
  }
  if (::rename(temporary_.c_str(), current_.c_str()) != 0) {
    return Errno("rename " + temporary_ + " to " + current_);
  }
  current_valid_ = true;
  return SyncDirectory(directory_);
}

}  // namespace dinamo::daemon
