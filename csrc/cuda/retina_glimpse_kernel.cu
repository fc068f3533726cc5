// CUDA kernels of gdram_ext::retina_glimpse.
//
// Forward: one launch per call, one thread per output cell (grid-stride loop), whatever the
// number of scales. Backward: one launch, a 2-D grid whose x dimension is the sample, so that
// each block reduces its threads' location gradients in shared memory and adds them with one
// atomic per block and coordinate; the images' gradient is accumulated with atomicAdd in the
// accumulation type (float for float16/bfloat16/float32, double for float64), then cast. The
// order of atomic additions varies from run to run, so the CUDA backward is not bitwise
// deterministic: it raises under torch.use_deterministic_algorithms(True), as grid_sample's does.
// Nothing here reads device memory from the host: the op can be captured in a CUDA graph.
#include "../retina_glimpse.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace gdram_ext {
namespace {

constexpr int kThreads = 256;

// Sizes and element strides of the images, and the output cell an index stands for.
struct Layout {
  int64_t channels, height, width;
  int64_t stride_b, stride_c, stride_h, stride_w;
  int64_t size, scales;

  __device__ __forceinline__ void split(int64_t index, int64_t& b, int64_t& s, int64_t& ch, int64_t& r, int64_t& c)
      const {
    c = index % size;
    index /= size;
    r = index % size;
    index /= size;
    ch = index % channels;
    index /= channels;
    s = index % scales;
    b = index / scales;
  }
};

Layout make_layout(const at::Tensor& images, const Glimpse& glimpse) {
  return Layout{
      images.size(1),
      images.size(2),
      images.size(3),
      images.stride(0),
      images.stride(1),
      images.stride(2),
      images.stride(3),
      glimpse.size,
      glimpse.num_scales};
}

// A scale's square for one sample: its left and top edges and its cell side, in pixels.
struct CellGeometry {
  double start_x, start_y, cell;
};

__device__ __forceinline__ CellGeometry geometry(const double* loc, const Layout& l, const Glimpse& g, int64_t b, int64_t s) {
  const double side = g.side(s);
  return CellGeometry{
      glimpse_start(loc[2 * b], l.width, side), glimpse_start(loc[2 * b + 1], l.height, side), side / g.size};
}

template <typename scalar_t>
__global__ void forward_kernel(
    const scalar_t* __restrict__ images,
    const double* __restrict__ loc,
    scalar_t* __restrict__ output,
    Layout layout,
    Glimpse glimpse,
    int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t b, s, ch, r, c;
    layout.split(index, b, s, ch, r, c);
    const CellGeometry g = geometry(loc, layout, glimpse, b, s);
    const scalar_t* plane = images + b * layout.stride_b + ch * layout.stride_c;
    acc_t value;
    if (glimpse.area) {
      const AreaCell cell{g.start_x + c * g.cell, g.start_y + r * g.cell, g.cell, layout.height, layout.width};
      value = area_value<acc_t>(plane, layout.stride_h, layout.stride_w, cell);
    } else {
      const Taps tx = bilinear_taps(g.start_x + (c + 0.5) * g.cell, layout.width);
      const Taps ty = bilinear_taps(g.start_y + (r + 0.5) * g.cell, layout.height);
      value = bilinear_value<acc_t>(plane, layout.stride_h, layout.stride_w, ty, tx);
    }
    output[index] = static_cast<scalar_t>(value);
  }
}

template <typename acc_t>
struct AtomicAdd {
  acc_t* plane;
  __device__ __forceinline__ void operator()(int64_t index, acc_t value) const { gpuAtomicAdd(plane + index, value); }
};

// Sum of `value` over the block, valid in thread 0.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value, acc_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = 0;
  if (warp == 0) {
    value = lane < static_cast<int>(blockDim.x / 32) ? shared[lane] : acc_t(0);
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  __syncthreads();
  return value;
}

// grid.x: the sample; grid.y: chunks of that sample's cells.
template <typename scalar_t>
__global__ void backward_kernel(
    const scalar_t* __restrict__ grad_output,
    const scalar_t* __restrict__ images,
    const double* __restrict__ loc,
    at::opmath_type<scalar_t>* __restrict__ grad_images,
    at::opmath_type<scalar_t>* __restrict__ grad_locations,
    Layout layout,
    Glimpse glimpse) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t shared[kThreads / 32];
  const int64_t b = blockIdx.x;
  const int64_t per_sample = layout.scales * layout.channels * layout.size * layout.size;
  const int64_t plane_size = layout.height * layout.width;
  acc_t d_x = 0, d_y = 0;
  for (int64_t local = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; local < per_sample;
       local += static_cast<int64_t>(blockDim.x) * gridDim.y) {
    const int64_t index = b * per_sample + local;
    int64_t unused_b, s, ch, r, c;
    layout.split(index, unused_b, s, ch, r, c);
    const CellGeometry g = geometry(loc, layout, glimpse, b, s);
    const scalar_t* plane = images + b * layout.stride_b + ch * layout.stride_c;
    const acc_t grad = static_cast<acc_t>(grad_output[index]);
    const AtomicAdd<acc_t> add{grad_images ? grad_images + (b * layout.channels + ch) * plane_size : nullptr};
    acc_t slope_x = 0, slope_y = 0;
    if (glimpse.area) {
      const AreaCell cell{g.start_x + c * g.cell, g.start_y + r * g.cell, g.cell, layout.height, layout.width};
      if (add.plane) area_scatter(cell, grad, add);
      if (grad_locations) area_slopes<acc_t>(plane, layout.stride_h, layout.stride_w, cell, slope_x, slope_y);
    } else {
      const Taps tx = bilinear_taps(g.start_x + (c + 0.5) * g.cell, layout.width);
      const Taps ty = bilinear_taps(g.start_y + (r + 0.5) * g.cell, layout.height);
      if (add.plane) bilinear_scatter(ty, tx, grad, layout.width, add);
      if (grad_locations) bilinear_slopes<acc_t>(plane, layout.stride_h, layout.stride_w, ty, tx, slope_x, slope_y);
    }
    d_x += grad * slope_x;
    d_y += grad * slope_y;
  }
  if (grad_locations == nullptr) return;  // uniform across the block: no thread is left at a barrier
  d_x = block_sum(d_x, shared);
  d_y = block_sum(d_y, shared);
  if (threadIdx.x == 0) {
    gpuAtomicAdd(grad_locations + 2 * b, d_x * acc_t(0.5 * layout.width));
    gpuAtomicAdd(grad_locations + 2 * b + 1, d_y * acc_t(0.5 * layout.height));
  }
}

int64_t blocks_for(int64_t work) {
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t cap = static_cast<int64_t>(multiprocessors) * 32;
  return std::max<int64_t>(1, std::min(wanted, cap));
}

at::Tensor retina_glimpse_cuda(
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size) {
  const Glimpse glimpse = check_arguments(images, locations, size, num_scales, scale_factor, mode, base_size);
  TORCH_CHECK(images.is_cuda(), "retina_glimpse (CUDA kernel): images must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(images.device());
  at::Tensor output = at::empty({images.size(0), num_scales * images.size(1), size, size}, images.options());
  const int64_t total = output.numel();
  if (total == 0) return output;
  const at::Tensor loc = locations.to(at::kDouble).contiguous();
  const Layout layout = make_layout(images, glimpse);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "retina_glimpse_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        images.const_data_ptr<scalar_t>(),
        loc.const_data_ptr<double>(),
        output.mutable_data_ptr<scalar_t>(),
        layout,
        glimpse,
        total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor> retina_glimpse_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size,
    bool images_grad,
    bool locations_grad) {
  const Glimpse glimpse =
      check_backward_arguments(grad_output, images, locations, size, num_scales, scale_factor, mode, base_size);
  TORCH_CHECK(images.is_cuda(), "retina_glimpse_backward (CUDA kernel): images must be on a CUDA device");
  at::globalContext().alertNotDeterministic("retina_glimpse_backward_cuda");
  const c10::cuda::CUDAGuard guard(images.device());
  const auto acc_type = at::toOpMathType(images.scalar_type());
  at::Tensor grad_images = images_grad ? at::zeros(images.sizes(), images.options().dtype(acc_type))
                                       : at::empty({0}, images.options());
  at::Tensor grad_locations = locations_grad ? at::zeros({images.size(0), 2}, locations.options().dtype(acc_type))
                                             : at::empty({0}, locations.options());
  const int64_t batch = images.size(0);
  const int64_t per_sample = num_scales * images.size(1) * size * size;
  if (batch > 0 && (images_grad || locations_grad)) {
    const at::Tensor grad = grad_output.contiguous();
    const at::Tensor loc = locations.to(at::kDouble).contiguous();
    const Layout layout = make_layout(images, glimpse);
    const int64_t chunks = std::min<int64_t>((per_sample + kThreads - 1) / kThreads, 65535);
    TORCH_CHECK(batch <= 2147483647, "retina_glimpse_backward (CUDA kernel): batch size must be < 2^31, got ", batch);
    const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>(chunks));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "retina_glimpse_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(),
          images.const_data_ptr<scalar_t>(),
          loc.const_data_ptr<double>(),
          images_grad ? grad_images.mutable_data_ptr<acc_t>() : nullptr,
          locations_grad ? grad_locations.mutable_data_ptr<acc_t>() : nullptr,
          layout,
          glimpse);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {
      images_grad ? grad_images.to(images.scalar_type()) : grad_images,
      locations_grad ? grad_locations.to(locations.scalar_type()) : grad_locations};
}

}  // namespace

TORCH_LIBRARY_IMPL(gdram_ext, CUDA, m) {
  m.impl("retina_glimpse", &retina_glimpse_cuda);
  m.impl("retina_glimpse_backward", &retina_glimpse_backward_cuda);
}

}  // namespace gdram_ext
