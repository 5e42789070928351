// The autograd engine's end-of-backward callbacks and pass ids, which the data-parallel
// layer builds on: callbacks queued from hooks run once, after every node and hook of the
// pass, in order; queueing outside a backward pass is an error; each pass has its own id.
#include "test_util.h"

using namespace kiln;
using kiln::test::vec;

TEST_CASE("queue_callback runs after the last hook of the pass", "[autograd][callbacks]") {
  Tensor a = from_vector(std::vector<float>{1, 2}).set_requires_grad();
  Tensor b = from_vector(std::vector<float>{3, 4}).set_requires_grad();
  std::vector<std::string> events;
  int queued = 0;
  uint64_t pass_in_hook = 0;
  auto hook = [&](const std::string& name) {
    return [&, name](const Tensor&) {
      events.push_back("hook " + name);
      pass_in_hook = backward_pass_id();
      if (queued++ == 0)
        queue_callback([&] {
          events.push_back("callback 1");
          queue_callback([&] { events.push_back("callback 2 (queued by 1)"); });
        });
    };
  };
  a.register_hook(hook("a"));
  b.register_hook(hook("b"));
  sum(a * b).backward();
  REQUIRE(events.size() == 4);
  CHECK(events[2] == "callback 1");
  CHECK(events[3] == "callback 2 (queued by 1)");
  CHECK(pass_in_hook != 0);
  CHECK(backward_pass_id() == 0);  // outside a pass

  // A second pass: the callback list starts empty, and the pass has a new id.
  uint64_t first = pass_in_hook;
  events.clear();
  queued = 0;
  sum(a + b).backward();
  CHECK(events.size() == 4);
  CHECK(pass_in_hook != first);
}

TEST_CASE("queue_callback outside backward is an error", "[autograd][callbacks]") {
  REQUIRE_KILN_ERROR(queue_callback([] {}), "no backward pass is running");
}

TEST_CASE("callbacks of a pass that throws are dropped", "[autograd][callbacks]") {
  Tensor a = from_vector(std::vector<float>{1, 2}).set_requires_grad();
  bool ran = false;
  int id = a.register_hook([&](const Tensor&) {
    queue_callback([&] { ran = true; });
    throw Error("hook failed on purpose");
  });
  REQUIRE_KILN_ERROR(sum(a * 2.0).backward(), "hook failed on purpose");
  CHECK_FALSE(ran);
  a.remove_hook(id);
  a.set_grad(Tensor());
  sum(a * 2.0).backward();  // the engine is usable again
  CHECK(vec<float>(a.grad()) == std::vector<float>{2, 2});
  CHECK_FALSE(ran);
}
