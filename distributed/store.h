// The rendezvous store: a small key-value service every rank of a job can reach, used to
// meet at start-up (who is here, the NCCL unique id, Gloo's addresses) and to find out,
// when a collective times out, which ranks never arrived. Two kinds: a TCP store served
// by rank 0 (MASTER_ADDR:MASTER_PORT) and a file store on a path all ranks share.
// Every blocking call has a timeout and throws kiln::Error naming what it waited for.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::dist {

using Bytes = std::vector<char>;

class Store {
 public:
  explicit Store(std::chrono::milliseconds timeout) : timeout_(timeout) {}
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  virtual void set(const std::string& key, const Bytes& value) = 0;
  // Waits up to the store's timeout for `key` to be set, then returns its value.
  Bytes get(const std::string& key) { return get(key, timeout_); }
  virtual Bytes get(const std::string& key, std::chrono::milliseconds timeout) = 0;
  // The value if `key` is set now, without waiting.
  virtual std::optional<Bytes> try_get(const std::string& key) = 0;
  // Adds `delta` to the integer stored at `key` (0 when unset) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Waits until every key is set; throws kiln::Error naming the missing ones on timeout.
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);

  void set(const std::string& key, const std::string& value) { set(key, Bytes(value.begin(), value.end())); }
  std::string get_string(const std::string& key) {
    Bytes b = get(key);
    return {b.begin(), b.end()};
  }

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  // Where the store lives, for error messages ("tcp://host:port", "file:///path").
  virtual std::string where() const = 0;

 private:
  std::chrono::milliseconds timeout_;
};

// A TCP store. The server (rank 0, is_server) listens on `port` on every interface and
// keeps the data; every rank, the server's own included, talks to it as a client. A
// client retries connecting until the timeout, so ranks may start in any order.
// port 0 on the server picks a free port (see port()).
class TcpStore final : public Store {
 public:
  TcpStore(std::string host, int port, bool is_server,
           std::chrono::milliseconds timeout = std::chrono::minutes(5));
  ~TcpStore() override;

  void set(const std::string& key, const Bytes& value) override;
  using Store::get;
  using Store::set;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::optional<Bytes> try_get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t delta) override;
  std::string where() const override;
  int port() const { return port_; }

 private:
  struct Server;
  struct Client;
  std::string host_;
  int port_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

// A store in a directory every rank can reach (a shared file system). Each key is a
// file written atomically; add() serializes through flock. Use a fresh directory per job:
// keys left by an earlier job would be read as this job's.
class FileStore final : public Store {
 public:
  explicit FileStore(std::string dir, std::chrono::milliseconds timeout = std::chrono::minutes(5));

  void set(const std::string& key, const Bytes& value) override;
  using Store::get;
  using Store::set;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::optional<Bytes> try_get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t delta) override;
  std::string where() const override { return "file://" + dir_; }

 private:
  std::string path_of(const std::string& key) const;
  std::string dir_;
};

// Puts every key of `base` under "prefix/", so several users share one store.
class PrefixStore final : public Store {
 public:
  PrefixStore(std::string prefix, std::shared_ptr<Store> base)
      : Store(base->timeout()), prefix_(std::move(prefix)), base_(std::move(base)) {}
  void set(const std::string& key, const Bytes& value) override { base_->set(k(key), value); }
  using Store::get;
  using Store::set;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override { return base_->get(k(key), timeout); }
  std::optional<Bytes> try_get(const std::string& key) override { return base_->try_get(k(key)); }
  int64_t add(const std::string& key, int64_t delta) override { return base_->add(k(key), delta); }
  std::string where() const override { return base_->where(); }

 private:
  std::string k(const std::string& key) const { return prefix_ + "/" + key; }
  std::string prefix_;
  std::shared_ptr<Store> base_;
};

}  // namespace kiln::dist
