// kiln's exceptions. Library code throws kiln::Error (or a subclass) with a message that
// names the op, the operands and what is wrong; it never exits or aborts.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace kiln {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// A device allocation failed; the process can go on (free memory and retry).
class OutOfMemory : public Error {
 public:
  using Error::Error;
};
// A requested device or backend is not usable (no GPU, built without CUDA, ...).
class DeviceError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace kiln

// KILN_CHECK(cond, parts...): throws kiln::Error built from the parts when cond is false.
#define KILN_CHECK(cond, ...)                                        \
  do {                                                               \
    if (!(cond)) throw ::kiln::Error(::kiln::detail::str(__VA_ARGS__)); \
  } while (0)
