// Fused local response normalisation across channels (AlexNet, paper section 3.3), CPU.
//
//   d[c] = bias + alpha * sum_{|c' - c| <= r} x[c']^2,     y[c] = x[c] * d[c]^-beta
//   dx[c] = g[c] * d[c]^-beta - 2 alpha beta x[c] * sum_{|c' - c| <= r} g[c'] y[c'] / d[c']
//
// Why a kernel of our own: TF's CPU LRNGrad recomputes every window and calls pow() per
// element and window position, and the composed-op forms (band-matrix GEMMs plus elementwise
// kernels) stream each [n, C] intermediate through memory several times. Here each pixel's
// C channels (contiguous in NHWC, 48 or 128 floats) are one row that stays in L1: the forward
// reads x and writes y once, the backward reads g, x and y and writes dx once, recomputing d
// from x instead of keeping it from the forward pass (a recompute is cheaper than a round
// trip of [n, C] through memory).
//
// Both ops take float32 or bfloat16 (attr T). A bfloat16 row is widened to float32 in a
// per-shard buffer, computed by the same float code and rounded back (to nearest even) when
// stored: the window sums, powers and ratios are float32 whatever the storage type, so a
// bf16 graph's LRN costs its memory traffic in bf16 and loses no precision beyond bf16's own
// rounding of the inputs and the result. float32 rows are used in place, exactly as before.
//
// Built at first use by alexnet_tf/kernels/__init__.py with TF's own compile flags.

#include <cmath>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace alexnet_tf {
namespace {

using ::tensorflow::bfloat16;
using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Per-row cost for the sharder, in cycles per channel (forward; the backward is twice).
constexpr int64_t kCyclesPerChannel = 10;

// The output has the shape of the inputs, which must agree (the gradient takes three).
Status SameShapeAsInputs(InferenceContext* c) {
  ShapeHandle input;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &input));
  for (int i = 1; i < c->num_inputs(); ++i) {
    ShapeHandle other;
    TF_RETURN_IF_ERROR(c->Merge(input, c->input(i), &other));
  }
  c->set_output(0, input);
  return ::tensorflow::OkStatus();
}

// The constants of one LRN layer, read from the op's attributes.
struct LrnParams {
  int radius;
  float bias;
  float alpha;
  float beta;

  explicit LrnParams(OpKernelConstruction* context) {
    OP_REQUIRES_OK(context, context->GetAttr("depth_radius", &radius));
    OP_REQUIRES_OK(context, context->GetAttr("bias", &bias));
    OP_REQUIRES_OK(context, context->GetAttr("alpha", &alpha));
    OP_REQUIRES_OK(context, context->GetAttr("beta", &beta));
    OP_REQUIRES(context, radius >= 0,
                InvalidArgument("depth_radius must be >= 0, got ", radius));
    OP_REQUIRES(context, bias > 0.0f, InvalidArgument("bias must be > 0, got ", bias));
  }
};

// d^-beta for a denominator d > 0. The paper's beta = 0.75 is 1 / sqrt(d * sqrt(d)): two
// square roots and a division, which the compiler vectorises, where pow() is a scalar
// library call.
struct PaperPower {
  float operator()(float d) const { return 1.0f / std::sqrt(d * std::sqrt(d)); }
};
struct AnyPower {
  float beta;
  float operator()(float d) const { return std::pow(d, -beta); }
};

// The sum of the 2 * radius + 1 values padded[c .. c + 2 radius]: the LRN window of channel
// c when `padded` holds the row between `radius` zeros on either side, so that the window
// clips at the first and last channel as TF's op does. kRadius >= 0 fixes the radius at
// compile time (then the loop over c below vectorises with the window unrolled); -1 reads
// it at run time.
template <int kRadius>
inline float Window(const float* padded, int c, int radius) {
  const int width = 2 * (kRadius >= 0 ? kRadius : radius) + 1;
  float sum = 0.0f;
  for (int k = 0; k < width; ++k) sum += padded[c + k];
  return sum;
}

// One shard's rows. Each row's C channels are handled in two or three loops over c with
// everything fused into them: one loop per row phase, not one per elementwise operation
// (measured on conv1's shape: 3x faster than a loop per operation, whose setup dominates
// at C = 48).
template <int kRadius, typename Power>
class RowKernels {
 public:
  RowKernels(const LrnParams& p, Power power, int channels)
      : p_(p), power_(power), channels_(channels),
        squares_(channels + 2 * p.radius, 0.0f), ratios_(channels + 2 * p.radius, 0.0f),
        powers_(channels) {}

  // y = x * d^-beta, d = bias + alpha * window sum of x^2.
  void Forward(const float* x, float* y) {
    const int radius = p_.radius;
    float* squares = squares_.data() + radius;  // zeros stay in the padding
    for (int c = 0; c < channels_; ++c) squares[c] = x[c] * x[c];
    for (int c = 0; c < channels_; ++c) {
      const float d = p_.bias + p_.alpha * Window<kRadius>(squares_.data(), c, radius);
      y[c] = x[c] * power_(d);
    }
  }

  // dx = g * d^-beta - 2 alpha beta x * window sum of (g y / d), with d recomputed from x.
  void Backward(const float* g, const float* x, const float* y, float* dx) {
    const int radius = p_.radius;
    float* squares = squares_.data() + radius;
    float* ratios = ratios_.data() + radius;
    for (int c = 0; c < channels_; ++c) squares[c] = x[c] * x[c];
    for (int c = 0; c < channels_; ++c) {
      const float d = p_.bias + p_.alpha * Window<kRadius>(squares_.data(), c, radius);
      powers_[c] = power_(d);
      ratios[c] = g[c] * y[c] / d;
    }
    const float cross = -2.0f * p_.alpha * p_.beta;
    for (int c = 0; c < channels_; ++c) {
      dx[c] = g[c] * powers_[c] + cross * x[c] * Window<kRadius>(ratios_.data(), c, radius);
    }
  }

 private:
  const LrnParams p_;
  const Power power_;
  const int channels_;
  std::vector<float> squares_, ratios_, powers_;  // the padded rows, and d^-beta
};

// One shard's view of rows stored as T: float rows are used in place; bfloat16 rows are
// widened into float buffers (`Load`) and results narrowed back (`Store`).
template <typename T>
class RowBuffers {
 public:
  RowBuffers(int channels, int count)
      : channels_(channels),
        buffers_(std::is_same<T, float>::value ? 0 : count * channels) {}

  // The float row `slot` holding `row` (the row itself for float).
  const float* Load(const T* row, int slot) {
    if constexpr (std::is_same<T, float>::value) {
      return row;
    } else {
      float* buffer = Slot(slot);
      for (int c = 0; c < channels_; ++c) buffer[c] = static_cast<float>(row[c]);
      return buffer;
    }
  }

  // Where to write a result that `Store` then puts into `row` (the row itself for float).
  float* Output(T* row, int slot) {
    if constexpr (std::is_same<T, float>::value) {
      return row;
    } else {
      return Slot(slot);
    }
  }

  void Store(T* row, int slot) {
    if constexpr (!std::is_same<T, float>::value) {
      const float* buffer = Slot(slot);
      for (int c = 0; c < channels_; ++c) row[c] = static_cast<T>(buffer[c]);
    }
  }

 private:
  float* Slot(int slot) { return buffers_.data() + slot * channels_; }

  const int channels_;
  std::vector<float> buffers_;
};

// Runs `work(kernels, begin, end)` over row ranges on the intra-op thread pool, with the
// row kernels specialised for the paper's constants (radius 2, beta 0.75; Caffe's too).
template <typename Work>
void ForRows(OpKernelContext* context, const LrnParams& p, int64_t rows, int channels,
             int64_t cycles_per_row, Work work) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  auto shard = [&](int64_t begin, int64_t end) {
    if (p.radius == 2 && p.beta == 0.75f) {
      RowKernels<2, PaperPower> kernels(p, PaperPower(), channels);
      work(&kernels, begin, end);
    } else {
      RowKernels<-1, AnyPower> kernels(p, AnyPower{p.beta}, channels);
      work(&kernels, begin, end);
    }
  };
  ::tensorflow::Shard(workers->num_threads, workers->workers, rows, cycles_per_row, shard);
}

// Checks that `input` has rank >= 1, allocates output 0 with its shape and gives its
// [rows, channels] view: both kernels work on rows of the last dimension.
Status AllocateRows(OpKernelContext* context, const Tensor& input, Tensor** output,
                    int64_t* rows, int* channels) {
  if (input.dims() < 1) {
    return InvalidArgument("input must have rank >= 1, got shape ",
                           input.shape().DebugString());
  }
  *channels = static_cast<int>(input.dim_size(input.dims() - 1));
  *rows = *channels == 0 ? 0 : input.NumElements() / *channels;
  return context->allocate_output(0, input.shape(), output);
}

template <typename T>
class LrnOp : public OpKernel {
 public:
  explicit LrnOp(OpKernelConstruction* context) : OpKernel(context), params_(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    Tensor* output = nullptr;
    int64_t rows;
    int channels;
    OP_REQUIRES_OK(context, AllocateRows(context, input, &output, &rows, &channels));
    if (rows == 0) return;
    const T* x = input.flat<T>().data();
    T* y = output->flat<T>().data();
    ForRows(context, params_, rows, channels, kCyclesPerChannel * channels,
            [=](auto* kernels, int64_t begin, int64_t end) {
              RowBuffers<T> io(channels, 2);
              for (int64_t r = begin; r < end; ++r) {
                T* out = y + r * channels;
                kernels->Forward(io.Load(x + r * channels, 0), io.Output(out, 1));
                io.Store(out, 1);
              }
            });
  }

 private:
  const LrnParams params_;
};

template <typename T>
class LrnGradOp : public OpKernel {
 public:
  explicit LrnGradOp(OpKernelConstruction* context) : OpKernel(context), params_(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& gradients = context->input(0);
    const Tensor& input = context->input(1);
    const Tensor& output = context->input(2);
    OP_REQUIRES(context,
                gradients.shape() == input.shape() && output.shape() == input.shape(),
                InvalidArgument("gradients, input and output must have the same shape, got ",
                                gradients.shape().DebugString(), ", ",
                                input.shape().DebugString(), " and ",
                                output.shape().DebugString()));
    Tensor* backprops = nullptr;
    int64_t rows;
    int channels;
    OP_REQUIRES_OK(context, AllocateRows(context, input, &backprops, &rows, &channels));
    if (rows == 0) return;
    const T* g = gradients.flat<T>().data();
    const T* x = input.flat<T>().data();
    const T* y = output.flat<T>().data();
    T* dx = backprops->flat<T>().data();
    ForRows(context, params_, rows, channels, 2 * kCyclesPerChannel * channels,
            [=](auto* kernels, int64_t begin, int64_t end) {
              RowBuffers<T> io(channels, 4);
              for (int64_t r = begin; r < end; ++r) {
                const int64_t i = r * channels;
                kernels->Backward(io.Load(g + i, 0), io.Load(x + i, 1), io.Load(y + i, 2),
                                  io.Output(dx + i, 3));
                io.Store(dx + i, 3);
              }
            });
  }

 private:
  const LrnParams params_;
};

}  // namespace

REGISTER_OP("AlexnetLrn")
    .Input("input: T")
    .Output("output: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("depth_radius: int = 2")
    .Attr("bias: float = 2.0")
    .Attr("alpha: float = 0.0001")
    .Attr("beta: float = 0.75")
    .SetShapeFn(SameShapeAsInputs)
    .Doc("Local response normalisation across the last dimension, fused in one pass.");

REGISTER_OP("AlexnetLrnGrad")
    .Input("gradients: T")
    .Input("input: T")
    .Input("output: T")
    .Output("backprops: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("depth_radius: int = 2")
    .Attr("bias: float = 2.0")
    .Attr("alpha: float = 0.0001")
    .Attr("beta: float = 0.75")
    .SetShapeFn(SameShapeAsInputs)
    .Doc("Gradient of AlexnetLrn with respect to its input.");

#define REGISTER_LRN_KERNELS(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("AlexnetLrn").Device(DEVICE_CPU).TypeConstraint<T>("T"), LrnOp<T>);         \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("AlexnetLrnGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), LrnGradOp<T>);
REGISTER_LRN_KERNELS(float);
REGISTER_LRN_KERNELS(bfloat16);
#undef REGISTER_LRN_KERNELS

}  // namespace alexnet_tf
