// Names of the kernel families' members (core/op_kinds.h), as the ops are called.
#include <kiln/core/op_kinds.h>

namespace kiln {

#define KILN_NAME_CASE(E, name) case decltype(op)::E: return #name;
const char* op_name(UnaryOp op) { switch (op) { KILN_UNARY_OPS(KILN_NAME_CASE) } return "?"; }
const char* op_name(BinaryOp op) { switch (op) { KILN_BINARY_OPS(KILN_NAME_CASE) } return "?"; }
const char* op_name(ReduceOp op) { switch (op) { KILN_REDUCE_OPS(KILN_NAME_CASE) } return "?"; }
#undef KILN_NAME_CASE

}  // namespace kiln
