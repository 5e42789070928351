// Device parsing and printing.
#include <kiln/core/device.h>
#include <kiln/core/error.h>

namespace kiln {

Device::Device(const std::string& spec) {
  if (spec == "cpu") {
    type = DeviceType::CPU;
    index = 0;
    return;
  }
  if (spec.rfind("cuda", 0) == 0) {
    type = DeviceType::CUDA;
    index = 0;
    if (spec.size() == 4) return;
    if (spec[4] == ':' && spec.size() > 5 && spec.find_first_not_of("0123456789", 5) == std::string::npos) {
      try {
        size_t pos = 0;
        index = std::stoi(spec.substr(5), &pos);
        if (pos == spec.size() - 5 && index >= 0) return;
      } catch (const std::exception&) {
      }
    }
  }
  throw Error("invalid device '" + spec + "' (expected cpu, cuda or cuda:N)");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

}  // namespace kiln
