// The backend registry.
#include <kiln/core/backend.h>

#include <array>

namespace kiln {
namespace {
std::array<Backend*, kNumDeviceTypes>& registry() {
  static std::array<Backend*, kNumDeviceTypes> r{};
  return r;
}
}  // namespace

void register_backend(DeviceType type, Backend* b) { registry()[static_cast<int>(type)] = b; }
bool has_backend(DeviceType type) { return registry()[static_cast<int>(type)] != nullptr; }

Backend& backend(DeviceType type) {
  Backend* b = registry()[static_cast<int>(type)];
  if (!b) {
    if (type == DeviceType::CUDA) throw DeviceError("CUDA device requested, but this kiln was built without CUDA (KILN_CUDA=OFF)");
    throw DeviceError("no backend registered for the CPU (kiln's ops library is not linked)");
  }
  return *b;
}

Backend& backend(Device device) {
  Backend& b = backend(device.type);
  if (device.is_cuda()) {
    int n = b.device_count();
    if (n == 0) throw DeviceError("CUDA device " + device.str() + " requested, but no usable CUDA device was found");
    if (device.index < 0 || device.index >= n)
      throw DeviceError("CUDA device " + device.str() + " requested, but only " + std::to_string(n) + " device(s) are visible");
  }
  return b;
}

bool cuda_is_available() { return cuda_device_count() > 0; }
int cuda_device_count() { return has_backend(DeviceType::CUDA) ? backend(DeviceType::CUDA).device_count() : 0; }

#define KILN_NAME_CASE(E, name) case decltype(op)::E: return #name;
const char* op_name(UnaryOp op) { switch (op) { KILN_UNARY_OPS(KILN_NAME_CASE) } return "?"; }
const char* op_name(BinaryOp op) { switch (op) { KILN_BINARY_OPS(KILN_NAME_CASE) } return "?"; }
const char* op_name(ReduceOp op) { switch (op) { KILN_REDUCE_OPS(KILN_NAME_CASE) } return "?"; }
#undef KILN_NAME_CASE

}  // namespace kiln
