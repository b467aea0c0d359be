// Letterbox one BGR uint8 frame into a planar RGB model input (NCHW), in one pass.
//
// The arithmetic is OpenCV's cv::resize INTER_LINEAR for 8-bit images, bit for bit:
// horizontal weights in 11-bit fixed point (INTER_RESIZE_COEF_BITS), exact integer sums,
// then the vertical step as OpenCV's vectorised path computes it:
//     ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16), rounded with (v + 2) >> 2.
// The per-column and per-row source indices and weights come from the host (xtab, ytab: one
// int4 per output column / row), computed there as OpenCV does (edgeyolo.gpu.letterbox).
// The byte -> input value map (RGB / 255 in the input's type, and the padding 114 / 255 at
// index 256) is a 257-entry table made with numpy, so FP32 and FP16 values equal the CPU
// path's exactly.
//
// One thread per output pixel writes its three planes (R, G, B from the frame's B, G, R);
// padding pixels get lut[256]. batch_index selects the image inside a batched input.

template <typename T>
__device__ __forceinline__ void letterbox_pixel(
    const unsigned char* __restrict__ src, int src_pitch,
    const int4* __restrict__ xtab, const int4* __restrict__ ytab,
    const T* __restrict__ lut, T* __restrict__ dst,
    int dst_w, int dst_h, int new_w, int new_h, int pad_left, int pad_top, int batch_index)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) {
        return;
    }
    const size_t plane = (size_t)dst_w * dst_h;
    T* out = dst + (size_t)batch_index * 3 * plane + (size_t)y * dst_w + x;
    const int ix = x - pad_left;
    const int iy = y - pad_top;
    if (ix < 0 || iy < 0 || ix >= new_w || iy >= new_h) {
        const T pad = lut[256];
        out[0] = pad;
        out[plane] = pad;
        out[2 * plane] = pad;
        return;
    }
    const int4 xt = xtab[ix];  // x0 * 3, x1 * 3, a0, a1
    const int4 yt = ytab[iy];  // y0, y1, b0, b1
    const unsigned char* r0 = src + (size_t)yt.x * src_pitch;
    const unsigned char* r1 = src + (size_t)yt.y * src_pitch;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const int h0 = r0[xt.x + c] * xt.z + r0[xt.y + c] * xt.w;
        const int h1 = r1[xt.x + c] * xt.z + r1[xt.y + c] * xt.w;
        int v = (((h0 >> 4) * yt.z) >> 16) + (((h1 >> 4) * yt.w) >> 16);
        v = (v + 2) >> 2;
        v = v < 0 ? 0 : (v > 255 ? 255 : v);
        out[(2 - c) * plane] = lut[v];  // BGR -> RGB by plane order
    }
}

extern "C" __global__ void letterbox_f32(
    const unsigned char* src, int src_pitch, const int4* xtab, const int4* ytab,
    const float* lut, float* dst, int dst_w, int dst_h, int new_w, int new_h,
    int pad_left, int pad_top, int batch_index)
{
    letterbox_pixel<float>(src, src_pitch, xtab, ytab, lut, dst, dst_w, dst_h, new_w, new_h,
                           pad_left, pad_top, batch_index);
}

// FP16 inputs: the table holds IEEE half bit patterns, so no conversion happens here.
extern "C" __global__ void letterbox_f16(
    const unsigned char* src, int src_pitch, const int4* xtab, const int4* ytab,
    const unsigned short* lut, unsigned short* dst, int dst_w, int dst_h, int new_w, int new_h,
    int pad_left, int pad_top, int batch_index)
{
    letterbox_pixel<unsigned short>(src, src_pitch, xtab, ytab, lut, dst, dst_w, dst_h, new_w,
                                    new_h, pad_left, pad_top, batch_index);
}
