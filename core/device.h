// Where a tensor lives: the host or the N-th CUDA device.
#pragma once
#include <string>

namespace kiln {

enum class DeviceType : int { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  Device() = default;
  Device(DeviceType t, int i = 0) : type(t), index(i) {}  // NOLINT
  Device(const std::string& spec);                         // NOLINT: "cpu", "cuda", "cuda:1"
  Device(const char* spec) : Device(std::string(spec)) {}  // NOLINT
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

inline const Device kCPU{DeviceType::CPU, 0};
inline Device cuda_device(int index = 0) { return Device(DeviceType::CUDA, index); }

}  // namespace kiln
