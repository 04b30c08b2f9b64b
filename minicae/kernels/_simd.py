"""Explicit SIMD vectors for Numba kernels: one native vector type and a few operations.

LLVM's auto-vectorizer, left to itself, neither keeps a block of
accumulators in registers across a reduction loop nor uses 512-bit vectors
on CPUs that tune for 256 (benchmarks/README.md). These intrinsics state the
vectors outright: a ``Vec`` is one LLVM vector value of ``VECTOR_BYTES``, the
widest register of the CPU that Numba compiles for (64 bytes with AVX-512,
32 with AVX2, 16 with SSE or NEON), so a kernel that holds a block of them in
local variables gets that many registers, and each ``vfma`` is one fused
multiply-add instruction. ``VECTOR_REGISTERS`` (32 with AVX-512 or on ARM,
else 16) tells the kernels how large a block of accumulators fits. Both are
asked of LLVM once, at import, for Numba's target (``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES`` when set, else the host), so the results are the same
on every width and only the speed differs.

    vload(a, i, lo, hi)      lanes a[i + l] for lo <= l < hi, 0 elsewhere (a masked load:
                             the lanes outside [lo, hi) are never read)
    vstore(a, i, v, lo, hi)  a[i + l] = v[l] for lo <= l < hi (a masked store)
    vsplat(a, value)         every lane = value (a's dtype)
    vfma(a, b, c)            a*b + c, lane by lane, one rounding
    vsum(v)                  the sum of the lanes (in lane order, left to right)
    vadd, vsub, vmul, vdiv, vsqrt   the IEEE operations lane by lane (each rounded
                             once, never fused: the same results as NumPy's ufuncs)
    lanes(a)                 how many lanes a vector of a's dtype has (a constant)

``a`` is a 1-D contiguous array (a flat view of the kernel's operand); the
indices are not bounds-checked, the kernels compute them. ``vscatter(a, i, s, v,
hi)`` stores lane l at a[i + l·s] (a transpose on the way out).

Numba's disk cache (``cache=True``) tracks each kernel's own source file, not
this one: after editing an intrinsic here, delete minicae/kernels/__pycache__
so that the kernels built on it are compiled again.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import config
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = ["vload", "vstore", "vscatter", "vsplat", "vfma", "vsum", "vrelu", "vadd",
           "vsub", "vmul", "vdiv", "vsqrt", "lanes", "VECTOR_BYTES", "VECTOR_REGISTERS"]

_PROBE = """define <16 x float> @probe(<16 x float> %v) {
  %w = fadd <16 x float> %v, %v
  ret <16 x float> %w
}"""


def _target_vectors():
    """(bytes, registers) of Numba's target CPU's widest vectors: the registers LLVM
    picks for one 64-byte addition (zmm: AVX-512, ymm: AVX/AVX2, else 16 bytes)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu = config.CPU_NAME or llvm.get_host_cpu_name()
    features = (config.CPU_FEATURES if config.CPU_FEATURES is not None
                else llvm.get_host_cpu_features().flatten())
    machine = llvm.Target.from_default_triple().create_target_machine(cpu=cpu,
                                                                       features=features)
    asm = machine.emit_assembly(llvm.parse_assembly(_PROBE))
    arm = llvm.get_default_triple().startswith(("aarch64", "arm64"))
    if "zmm" in asm:
        return 64, 32
    return (32 if "ymm" in asm else 16), (32 if arm else 16)


VECTOR_BYTES, VECTOR_REGISTERS = _target_vectors()


class Vec(types.Type):
    """Numba type of one SIMD vector of ``dtype`` (VECTOR_BYTES wide)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.count = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vec({dtype}x{self.count})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        scalar = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(scalar, fe_type.count))


def _check_array(arr, name):
    if not isinstance(arr, types.Array) or arr.ndim != 1 or arr.dtype not in (
            types.float32, types.float64):
        raise TypeError(f"{name}: expected a 1-D float32/float64 array, got {arr}")


def _lane_mask(builder, count, lo, hi):
    """<count x i1>: lo <= lane < hi (lo, hi intp values, clamped to [0, count]),
    built as the bit pattern (2**hi - 1) & ~(2**lo - 1) of a count-bit integer
    (empty when hi <= lo)."""
    intp = lo.type
    zero, top = ir.Constant(intp, 0), ir.Constant(intp, count)

    def clamp(v):
        v = builder.select(builder.icmp_signed("<", v, zero), zero, v)
        return builder.select(builder.icmp_signed(">", v, top), top, v)

    one = ir.Constant(intp, 1)             # count <= 16 lanes: 2**count fits
    below_hi = builder.sub(builder.shl(one, clamp(hi)), one)
    below_lo = builder.sub(builder.shl(one, clamp(lo)), one)
    bits = builder.trunc(builder.and_(below_hi, builder.not_(below_lo)), ir.IntType(count))
    return builder.bitcast(bits, ir.VectorType(ir.IntType(1), count))


def _splat(builder, value, count):
    vtype = ir.VectorType(value.type, count)
    one = builder.insert_element(ir.Constant(vtype, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vtype, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), count),
                                              [0] * count))


def _masked(builder, op, vec, vtype, ptype):
    """The declaration of llvm.masked.load/store for this vector type."""
    mask = ir.VectorType(ir.IntType(1), vec.count)
    i32 = ir.IntType(32)
    if op == "load":
        fnty = ir.FunctionType(vtype, [ptype, i32, mask, vtype])
    else:
        fnty = ir.FunctionType(ir.VoidType(), [vtype, ptype, i32, mask])
    name = f"llvm.masked.{op}.v{vec.count}f{vec.dtype.bitwidth}.p0"
    return cgutils.get_or_insert_function(builder.module, fnty, name)


def _element_pointer(context, builder, arrtype, arr, index, itype):
    ary = context.make_array(arrtype)(context, builder, arr)
    index = context.cast(builder, index, itype, types.intp)
    return builder.gep(ary.data, [index])


def _masked_access(context, builder, sig, args, vec, lo_at):
    """(vector type, vector pointer to a[i], lane mask) for the masked load/store
    whose array and index are args 0-1 and whose lane bounds are args lo_at, lo_at+1."""
    vtype = context.get_value_type(vec)
    ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
    lo = context.cast(builder, args[lo_at], sig.args[lo_at], types.intp)
    hi = context.cast(builder, args[lo_at + 1], sig.args[lo_at + 1], types.intp)
    return (vtype, builder.bitcast(ptr, vtype.as_pointer()),
            _lane_mask(builder, vec.count, lo, hi))


@intrinsic
def vload(typingctx, arr, index, lo, hi):
    _check_array(arr, "vload")
    vec = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        vtype, ptr, mask = _masked_access(context, builder, sig, args, vec, 2)
        fn = _masked(builder, "load", vec, vtype, ptr.type)
        align = ir.Constant(ir.IntType(32), vec.dtype.bitwidth // 8)
        return builder.call(fn, [ptr, align, mask, ir.Constant(vtype, None)])

    return vec(arr, index, lo, hi), codegen


@intrinsic
def vstore(typingctx, arr, index, vec, lo, hi):
    _check_array(arr, "vstore")
    if not isinstance(vec, Vec) or vec.dtype != arr.dtype:
        raise TypeError(f"vstore: expected a Vec of {arr.dtype}, got {vec}")

    def codegen(context, builder, sig, args):
        vtype, ptr, mask = _masked_access(context, builder, sig, args, vec, 3)
        fn = _masked(builder, "store", vec, vtype, ptr.type)
        align = ir.Constant(ir.IntType(32), vec.dtype.bitwidth // 8)
        builder.call(fn, [args[2], ptr, align, mask])
        return context.get_dummy_value()

    return types.none(arr, index, vec, lo, hi), codegen


@intrinsic
def vsplat(typingctx, arr, value):
    _check_array(arr, "vsplat")
    vec = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[1], sig.args[1], vec.dtype)
        return _splat(builder, scalar, vec.count)

    return vec(arr, value), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    if not (isinstance(a, Vec) and a == b == c):
        raise TypeError(f"vfma: expected three Vecs of one dtype, got {a}, {b}, {c}")

    def codegen(context, builder, sig, args):
        vtype = args[0].type
        fnty = ir.FunctionType(vtype, [vtype] * 3)
        fn = cgutils.get_or_insert_function(
            builder.module, fnty, f"llvm.fma.v{a.count}f{a.dtype.bitwidth}")
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@intrinsic
def vsum(typingctx, vec):
    if not isinstance(vec, Vec):
        raise TypeError(f"vsum: expected a Vec, got {vec}")

    def codegen(context, builder, sig, args):
        total = builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))
        for i in range(1, vec.count):
            total = builder.fadd(total, builder.extract_element(
                args[0], ir.Constant(ir.IntType(32), i)))
        return total

    return vec.dtype(vec), codegen


@intrinsic
def lanes(typingctx, arr):
    _check_array(arr, "lanes")
    count = Vec(arr.dtype).count

    def codegen(context, builder, sig, args):
        return ir.Constant(cgutils.intp_t, count)

    return types.intp(arr), codegen


@intrinsic
def vrelu(typingctx, vec):
    """max(v, 0) lane by lane; NaN stays NaN (as np.maximum(v, 0))."""
    if not isinstance(vec, Vec):
        raise TypeError(f"vrelu: expected a Vec, got {vec}")

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])

    return vec(vec), codegen


@intrinsic
def vscatter(typingctx, arr, index, stride, vec, hi):
    """a[i + l·stride] = v[l] for 0 <= l < hi: lanes to elements ``stride`` apart
    (a transpose on the way out, e.g. channels-last lanes into NCHW planes)."""
    _check_array(arr, "vscatter")
    if not isinstance(vec, Vec) or vec.dtype != arr.dtype:
        raise TypeError(f"vscatter: expected a Vec of {arr.dtype}, got {vec}")

    def codegen(context, builder, sig, args):
        count = vec.count
        intp = cgutils.intp_t
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        step = builder.mul(context.cast(builder, args[2], sig.args[2], types.intp),
                           ir.Constant(intp, vec.dtype.bitwidth // 8))
        lane = ir.Constant(ir.VectorType(intp, count), [ir.Constant(intp, i)
                                                         for i in range(count)])
        addresses = builder.add(_splat(builder, builder.ptrtoint(ptr, intp), count),
                                builder.mul(lane, _splat(builder, step, count)))
        pointers = builder.inttoptr(addresses, ir.VectorType(ptr.type, count))
        hi_ = context.cast(builder, args[4], sig.args[4], types.intp)
        mask = _lane_mask(builder, count, ir.Constant(intp, 0), hi_)
        vtype = context.get_value_type(vec)
        fnty = ir.FunctionType(ir.VoidType(), [vtype, pointers.type, ir.IntType(32),
                                               mask.type])
        fn = cgutils.get_or_insert_function(
            builder.module, fnty, f"llvm.masked.scatter.v{count}f{vec.dtype.bitwidth}"
                                  f".v{count}p0")
        builder.call(fn, [args[3], pointers, ir.Constant(ir.IntType(32),
                                                         vec.dtype.bitwidth // 8), mask])
        return context.get_dummy_value()

    return types.none(arr, index, stride, vec, hi), codegen


def _binary(op, name):
    @intrinsic
    def binary(typingctx, a, b):
        if not (isinstance(a, Vec) and a == b):
            raise TypeError(f"{name}: expected two Vecs of one dtype, got {a}, {b}")

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(*args)     # IEEE, no fast-math flags

        return a(a, b), codegen
    binary.__name__ = name
    return binary


vadd = _binary("fadd", "vadd")
vsub = _binary("fsub", "vsub")
vmul = _binary("fmul", "vmul")
vdiv = _binary("fdiv", "vdiv")


@intrinsic
def vsqrt(typingctx, vec):
    """The correctly rounded square root, lane by lane (as np.sqrt)."""
    if not isinstance(vec, Vec):
        raise TypeError(f"vsqrt: expected a Vec, got {vec}")

    def codegen(context, builder, sig, args):
        vtype = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vtype]),
            f"llvm.sqrt.v{vec.count}f{vec.dtype.bitwidth}")
        return builder.call(fn, [args[0]])

    return vec(vec), codegen
