// The TCP and file stores. The TCP protocol is one request, one reply, on one connection
// per client: a command byte, length-prefixed key (and value), and a status byte in the
// reply. The server keeps one thread per connection, so a GET can block on its key
// (with the client's timeout) without holding up anyone else.
#include <kiln/distributed/store.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <kiln/core/error.h>
#include <kiln/core/log.h>

namespace kiln::dist {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::string seconds_str(milliseconds t) {
  std::ostringstream os;
  os << static_cast<double>(t.count()) / 1000.0 << " s";
  return os.str();
}

}  // namespace

void Store::wait(const std::vector<std::string>& keys, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (const std::string& key : keys) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    try {
      get(key, std::max(left, milliseconds(0)));
    } catch (const Error&) {
      std::vector<std::string> missing;
      for (const std::string& k : keys)
        if (!try_get(k)) missing.push_back(k);
      std::ostringstream os;
      os << "store " << where() << ": timed out after " << seconds_str(timeout) << " waiting for ";
      for (size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << "'" << missing[i] << "'";
      throw Error(os.str());
    }
  }
}

// ---- TCP store ------------------------------------------------------------------

namespace {

enum class Cmd : uint8_t { Set = 1, Get = 2, TryGet = 3, Add = 4 };
enum class Status : uint8_t { Ok = 0, Timeout = 1, Missing = 2 };

// Full-length send/recv; false when the peer closed or the socket failed.
bool send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}
bool recv_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t k = ::recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}
bool send_u64(int fd, uint64_t v) { return send_all(fd, &v, sizeof v); }
bool recv_u64(int fd, uint64_t& v) { return recv_all(fd, &v, sizeof v); }
bool send_bytes(int fd, const char* p, size_t n) { return send_u64(fd, n) && send_all(fd, p, n); }
constexpr uint64_t kMaxMessage = uint64_t(1) << 30;
bool recv_bytes(int fd, std::string& out) {
  uint64_t n;
  if (!recv_u64(fd, n) || n > kMaxMessage) return false;
  out.resize(n);
  return recv_all(fd, out.data(), n);
}

int64_t parse_int(const std::string& s) {
  if (s.empty()) return 0;
  try {
    return std::stoll(s);
  } catch (const std::exception&) {
    throw Error("store add: the value stored is not an integer: '" + s + "'");
  }
}

}  // namespace

struct TcpStore::Server {
  int listen_fd = -1;
  std::thread acceptor;
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, std::string> data;
  std::vector<int> conns;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};

  explicit Server(int& port) {
    listen_fd = ::socket(AF_INET6, SOCK_STREAM, 0);
    bool v6 = listen_fd >= 0;
    if (!v6) listen_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    KILN_CHECK(listen_fd >= 0, "TcpStore: socket() failed: ", std::strerror(errno));
    int one = 1, zero = 0;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {
      ::setsockopt(listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);  // also IPv4
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0) {
      int e = errno;
      ::close(listen_fd);
      throw Error(detail::str("TcpStore: rank 0 cannot listen on port ", port, ": ", std::strerror(e),
                              e == EADDRINUSE ? " (another job uses this port; choose another with MASTER_PORT "
                                                "or kiln-run --master-port)"
                                              : ""));
    }
    KILN_CHECK(::listen(listen_fd, 1024) == 0, "TcpStore: listen() failed: ", std::strerror(errno));
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
    port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    acceptor = std::thread([this] { accept_loop(); });
  }

  ~Server() {
    stopping = true;
    ::shutdown(listen_fd, SHUT_RDWR);
    ::close(listen_fd);
    {
      std::lock_guard<std::mutex> lk(mu);
      for (int fd : conns) ::shutdown(fd, SHUT_RDWR);
    }
    cv.notify_all();
    if (acceptor.joinable()) acceptor.join();
    for (auto& t : workers)
      if (t.joinable()) t.join();
    for (int fd : conns) ::close(fd);
  }

  void accept_loop() {
    while (!stopping) {
      int fd = ::accept(listen_fd, nullptr, nullptr);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // the listening socket was closed
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard<std::mutex> lk(mu);
      if (stopping) {
        ::close(fd);
        return;
      }
      conns.push_back(fd);
      workers.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    for (;;) {
      uint8_t cmd;
      std::string key;
      if (!recv_all(fd, &cmd, 1) || !recv_bytes(fd, key)) return;
      switch (static_cast<Cmd>(cmd)) {
        case Cmd::Set: {
          std::string value;
          if (!recv_bytes(fd, value)) return;
          {
            std::lock_guard<std::mutex> lk(mu);
            data[key] = std::move(value);
          }
          cv.notify_all();
          uint8_t st = uint8_t(Status::Ok);
          if (!send_all(fd, &st, 1)) return;
          break;
        }
        case Cmd::Get:
        case Cmd::TryGet: {
          uint64_t timeout_ms = 0;
          if (static_cast<Cmd>(cmd) == Cmd::Get && !recv_u64(fd, timeout_ms)) return;
          std::unique_lock<std::mutex> lk(mu);
          auto deadline = Clock::now() + milliseconds(timeout_ms);
          cv.wait_until(lk, deadline, [&] { return stopping || data.count(key) > 0; });
          auto it = data.find(key);
          if (it == data.end()) {
            lk.unlock();
            uint8_t st = uint8_t(static_cast<Cmd>(cmd) == Cmd::Get ? Status::Timeout : Status::Missing);
            if (!send_all(fd, &st, 1)) return;
          } else {
            std::string value = it->second;
            lk.unlock();
            uint8_t st = uint8_t(Status::Ok);
            if (!send_all(fd, &st, 1) || !send_bytes(fd, value.data(), value.size())) return;
          }
          break;
        }
        case Cmd::Add: {
          uint64_t delta;
          if (!recv_u64(fd, delta)) return;
          int64_t result;
          {
            std::lock_guard<std::mutex> lk(mu);
            std::string& v = data[key];
            int64_t cur = 0;
            try {
              cur = parse_int(v);
            } catch (const Error&) {
              cur = 0;
            }
            result = cur + static_cast<int64_t>(delta);
            v = std::to_string(result);
          }
          cv.notify_all();
          uint8_t st = uint8_t(Status::Ok);
          if (!send_all(fd, &st, 1) || !send_u64(fd, static_cast<uint64_t>(result))) return;
          break;
        }
        default:
          return;  // not a kiln store client: drop the connection
      }
    }
  }
};

struct TcpStore::Client {
  int fd = -1;
  std::mutex mu;
  std::string where;
  ~Client() {
    if (fd >= 0) ::close(fd);
  }
  [[noreturn]] void lost() const {
    throw Error("TcpStore: lost the connection to the store at " + where +
                " (did rank 0, which serves it, exit or fail?)");
  }
};

TcpStore::TcpStore(std::string host, int port, bool is_server, milliseconds timeout)
    : Store(timeout), host_(std::move(host)), port_(port) {
  KILN_CHECK(port >= 0 && port < 65536, "TcpStore: port ", port, " is not a TCP port");
  KILN_CHECK(is_server || port > 0, "TcpStore: a client needs the server's port (got 0)");
  if (is_server) server_ = std::make_unique<Server>(port_);
  client_ = std::make_unique<Client>();
  client_->where = where();

  // Connect, retrying while the server is not up yet.
  auto deadline = Clock::now() + timeout;
  std::string last_error;
  auto delay = milliseconds(10);
  for (;;) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string port_s = std::to_string(port_);
    const char* h = is_server ? "localhost" : host_.c_str();
    int gai = ::getaddrinfo(h, port_s.c_str(), &hints, &res);
    if (gai != 0) {
      last_error = std::string("cannot resolve '") + h + "': " + gai_strerror(gai);
    } else {
      for (addrinfo* a = res; a; a = a->ai_next) {
        int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          client_->fd = fd;
          break;
        }
        last_error = std::strerror(errno);
        ::close(fd);
      }
      ::freeaddrinfo(res);
    }
    if (client_->fd >= 0) break;
    if (Clock::now() + delay > deadline)
      throw Error(detail::str("TcpStore: could not reach the store at ", where(), " within ", seconds_str(timeout),
                              " (", last_error, "). Is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?"));
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, milliseconds(500));
  }
  int one = 1;
  ::setsockopt(client_->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

TcpStore::~TcpStore() {
  client_.reset();
  server_.reset();
}

std::string TcpStore::where() const { return "tcp://" + host_ + ":" + std::to_string(port_); }

void TcpStore::set(const std::string& key, const Bytes& value) {
  std::lock_guard<std::mutex> lk(client_->mu);
  int fd = client_->fd;
  uint8_t cmd = uint8_t(Cmd::Set), st;
  if (!send_all(fd, &cmd, 1) || !send_bytes(fd, key.data(), key.size()) ||
      !send_bytes(fd, value.data(), value.size()) || !recv_all(fd, &st, 1))
    client_->lost();
}

Bytes TcpStore::get(const std::string& key, milliseconds timeout) {
  std::lock_guard<std::mutex> lk(client_->mu);
  int fd = client_->fd;
  uint8_t cmd = uint8_t(Cmd::Get), st;
  if (!send_all(fd, &cmd, 1) || !send_bytes(fd, key.data(), key.size()) ||
      !send_u64(fd, static_cast<uint64_t>(std::max<int64_t>(timeout.count(), 0))) || !recv_all(fd, &st, 1))
    client_->lost();
  if (static_cast<Status>(st) != Status::Ok)
    throw Error(detail::str("store ", where(), ": timed out after ", seconds_str(timeout), " waiting for '", key, "'"));
  std::string v;
  if (!recv_bytes(fd, v)) client_->lost();
  return Bytes(v.begin(), v.end());
}

std::optional<Bytes> TcpStore::try_get(const std::string& key) {
  std::lock_guard<std::mutex> lk(client_->mu);
  int fd = client_->fd;
  uint8_t cmd = uint8_t(Cmd::TryGet), st;
  if (!send_all(fd, &cmd, 1) || !send_bytes(fd, key.data(), key.size()) || !recv_all(fd, &st, 1)) client_->lost();
  if (static_cast<Status>(st) != Status::Ok) return std::nullopt;
  std::string v;
  if (!recv_bytes(fd, v)) client_->lost();
  return Bytes(v.begin(), v.end());
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  std::lock_guard<std::mutex> lk(client_->mu);
  int fd = client_->fd;
  uint8_t cmd = uint8_t(Cmd::Add), st;
  uint64_t result;
  if (!send_all(fd, &cmd, 1) || !send_bytes(fd, key.data(), key.size()) ||
      !send_u64(fd, static_cast<uint64_t>(delta)) || !recv_all(fd, &st, 1) || !recv_u64(fd, result))
    client_->lost();
  return static_cast<int64_t>(result);
}

// ---- file store -----------------------------------------------------------------

FileStore::FileStore(std::string dir, milliseconds timeout) : Store(timeout), dir_(std::move(dir)) {
  KILN_CHECK(!dir_.empty(), "FileStore: empty directory path");
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  KILN_CHECK(std::filesystem::is_directory(dir_), "FileStore: cannot create the directory '", dir_,
             "': ", ec ? ec.message() : "not a directory");
}

std::string FileStore::path_of(const std::string& key) const {
  // Keys may hold '/' and other characters a file name cannot: escape all but [A-Za-z0-9_-.].
  std::string name;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.') {
      name += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      name += buf;
    }
  }
  return dir_ + "/" + name;
}

namespace {
std::optional<Bytes> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_file_atomic(const std::string& path, const Bytes& value) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KILN_CHECK(f, "FileStore: cannot write '", tmp, "': ", std::strerror(errno));
    f.write(value.data(), static_cast<std::streamsize>(value.size()));
    KILN_CHECK(f.good(), "FileStore: writing '", tmp, "' failed");
  }
  KILN_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "FileStore: rename to '", path,
             "' failed: ", std::strerror(errno));
}
}  // namespace

void FileStore::set(const std::string& key, const Bytes& value) { write_file_atomic(path_of(key), value); }

std::optional<Bytes> FileStore::try_get(const std::string& key) { return read_file(path_of(key)); }

Bytes FileStore::get(const std::string& key, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto delay = milliseconds(1);
  for (;;) {
    if (auto v = try_get(key)) return *v;
    if (Clock::now() >= deadline)
      throw Error(detail::str("store ", where(), ": timed out after ", seconds_str(timeout), " waiting for '", key,
                              "'"));
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, milliseconds(50));
  }
}

int64_t FileStore::add(const std::string& key, int64_t delta) {
  std::string lock_path = path_of(key) + ".lock";
  int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR, 0644);
  KILN_CHECK(fd >= 0, "FileStore: cannot open '", lock_path, "': ", std::strerror(errno));
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      ::close(fd);
      throw Error(detail::str("FileStore: flock on '", lock_path, "' failed: ", std::strerror(errno)));
    }
  }
  int64_t result;
  try {
    auto cur = try_get(key);
    result = parse_int(cur ? std::string(cur->begin(), cur->end()) : std::string()) + delta;
    std::string s = std::to_string(result);
    set(key, Bytes(s.begin(), s.end()));
  } catch (...) {
    ::flock(fd, LOCK_UN);
    ::close(fd);
    throw;
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return result;
}

}  // namespace kiln::dist
