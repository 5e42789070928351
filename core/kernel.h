// Kernel slots: how an operator reaches the kernel for a tensor's device.
//
// Each operator declares one slot, a line in its layer's op list (ops/op_list.h,
// optim/op_list.h, core/kernel_list.h):
//
//   KILN_OP(gelu, void(const TensorView& x, const TensorView& y, const GeluParams& p))
//
// which makes `kiln::op::gelu`, a tag type with the slot's function type (`Fn`) and
// name, and declares the functions that fill it: `kiln::cpu::gelu` (ops/cpu/gelu.cpp)
// and, in a CUDA build, `kiln::cuda::gelu` (cuda/kernels/gelu.cu). The op's entry point
// checks its inputs once, allocates outputs and calls
//
//   kernel<op::gelu>(x.device())(kernel_view(x), kernel_view(y), {approx});
//
// Registration is explicit, driven by the lists: each list has one loader (ops/register.cpp
// for core's and ops' lists, optim/register.cpp for optim's) that stores every listed
// function into its slot. It runs the first time a slot of that list is looked up
// (Op::load()), and since the loader names every kernel function, a static link pulls them
// all in. core knows how slots work, not what they hold.
#pragma once
#include <kiln/core/device.h>
#include <kiln/core/runtime.h>
#include <kiln/core/tensor_view.h>

namespace kiln {

namespace op {}  // the slot tags, one per KILN_OP line

namespace detail {
// The slot table of one op: a function pointer per device type (null: no kernel).
template <class Op> inline typename Op::Fn* kernel_slot[kNumDeviceTypes] = {};

[[noreturn]] void throw_missing_kernel(const char* op, Device device);
}  // namespace detail

// Fills an op's slot for a device type (the lists' loaders do this; so may a test or a
// plug-in backend, replacing a kernel).
template <class Op> void set_kernel(DeviceType type, typename Op::Fn* fn) {
  detail::kernel_slot<Op>[static_cast<int>(type)] = fn;
}

// The kernel of `Op` for `device`. Throws kiln::DeviceError when the device is not usable
// (no CUDA in this build, no such GPU) and kiln::Error when the op has no kernel there.
template <class Op> typename Op::Fn* kernel(Device device) {
  static const bool loaded = (Op::load(), true);  // once per op, thread-safe
  (void)loaded;
  runtime(device);  // validates the device (throws with the reason when unusable)
  typename Op::Fn* fn = detail::kernel_slot<Op>[static_cast<int>(device.type)];
  if (!fn) detail::throw_missing_kernel(Op::kName, device);
  return fn;
}

}  // namespace kiln

// Declares the slots of an op list LIST, an X-macro of (name, function type) pairs: the tag
// types kiln::op::<name> and the kernel functions kiln::cpu::<name> and kiln::cuda::<name>.
// Used once per list, at namespace kiln scope. Each tag's load() is defined in the list's
// loader file: #define KILN_DETAIL_LOADER_FN <loader>, then LIST(KILN_DETAIL_OP_LOAD).
#define KILN_DETAIL_OP_TAG(name, ...)               \
  struct name {                                     \
    using Fn = __VA_ARGS__;                         \
    static constexpr const char* kName = #name;     \
    static void load();                             \
  };
#define KILN_DETAIL_OP_FN(name, ...) ::kiln::op::name::Fn name;
#define KILN_DECLARE_KERNELS(LIST)   \
  namespace op { LIST(KILN_DETAIL_OP_TAG) } \
  namespace cpu { LIST(KILN_DETAIL_OP_FN) } \
  namespace cuda { LIST(KILN_DETAIL_OP_FN) }

// For a list's loader file: define each tag's load() as the loader KILN_DETAIL_LOADER_FN,
// and store each kernel function into its slot.
#define KILN_DETAIL_OP_LOAD(name, ...) void op::name::load() { KILN_DETAIL_LOADER_FN(); }
#define KILN_DETAIL_SET_CPU(name, ...) set_kernel<op::name>(DeviceType::CPU, &cpu::name);
#define KILN_DETAIL_SET_CUDA(name, ...) set_kernel<op::name>(DeviceType::CUDA, &cuda::name);
