"""``distill``: one graph with a student, a teacher and the distillation loss between them.

``loss = T**2 * KL(softmax(teacher / T) || log_softmax(student / T))``, Hinton's
knowledge-distillation loss as written in PyTorch::

    F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
"""

from __future__ import annotations

import math

import onnx
from onnx import ModelProto, helper

from .._contract import Variant
from ..export import opset_of
from ..graph import rename_values
from ..model_io import ModelLike, load_model
from .embed import (
    dims_of,
    dtype_of,
    embed_variant,
    ensure_opset,
    node_names,
    unique,
    value_info,
    value_names,
)

PREFIX = "teacher/"


def _prefixed(name: str) -> str:
    return PREFIX.rstrip("/") + name if name.startswith("/") else PREFIX + name


def _check_shared_inputs(student: ModelProto, teacher: ModelProto) -> None:
    s_inputs = {vi.name: vi for vi in student.graph.input}
    t_inputs = {vi.name: vi for vi in teacher.graph.input}
    inits = {i.name for i in teacher.graph.initializer}
    t_real = [n for n in t_inputs if n not in inits]
    shared = [n for n in t_real if n in s_inputs]
    if not shared:
        raise ValueError(
            f"student and teacher share no input names (student {sorted(s_inputs)}, "
            f"teacher {sorted(t_real)})"
        )
    for name in shared:
        s_type = s_inputs[name].type.tensor_type.elem_type
        t_type = t_inputs[name].type.tensor_type.elem_type
        if s_type != t_type:
            raise TypeError(
                f"input {name!r} is {onnx.TensorProto.DataType.Name(s_type)} in the student and "
                f"{onnx.TensorProto.DataType.Name(t_type)} in the teacher"
            )


def _merge_opsets(student: ModelProto, teacher: ModelProto) -> tuple[ModelProto, ModelProto]:
    """Both models at the same ai.onnx version (the higher); other domains must agree."""
    student, teacher = ensure_opset(student), ensure_opset(teacher)
    high = max(opset_of(student), opset_of(teacher))
    student, teacher = ensure_opset(student, high), ensure_opset(teacher, high)
    s_imports = {o.domain: o.version for o in student.opset_import}
    for o in teacher.opset_import:
        if o.domain in ("", "ai.onnx"):
            continue
        if o.domain in s_imports and s_imports[o.domain] != o.version:
            raise ValueError(
                f"student imports {o.domain!r} version {s_imports[o.domain]}, teacher {o.version}"
            )
        if o.domain not in s_imports:
            student.opset_import.append(helper.make_opsetid(o.domain, o.version))
    return student, teacher


def distill(
    student: ModelLike,
    teacher: ModelLike,
    *,
    student_output: str,
    teacher_output: str,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    output_name: str = "distill_loss",
) -> ModelProto:
    """Merge ``student`` and ``teacher`` (which share their inputs, by name) into one model
    whose outputs are the student's, the teacher's and ``output_name``, the distillation loss
    ``T**2 * KLDivLoss(log_softmax(student_output / T), softmax(teacher_output / T))``.

    The teacher's values, nodes and functions whose names clash with the student's are
    prefixed with ``teacher/`` (its outputs too, so ``logits`` in both becomes
    ``teacher/logits``); inputs are shared. Neither argument is modified.
    """
    variant = Variant(reduction)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    student, teacher = load_model(student, "student"), load_model(teacher, "teacher")
    for role, model, name in (
        ("student_output", student, student_output),
        ("teacher_output", teacher, teacher_output),
    ):
        if name not in value_names(model.graph) and name not in {
            o.name for o in model.graph.output
        }:
            raise ValueError(f"{role} {name!r} is not a value of the {role.split('_')[0]}")
    s_info = value_info(student, student_output, "student_output")
    t_info = value_info(teacher, teacher_output, "teacher_output")
    dtype = dtype_of(s_info, "student_output")
    if dtype_of(t_info, "teacher_output") != dtype:
        raise TypeError(
            f"student_output {student_output!r} is {dtype}, teacher_output {teacher_output!r} "
            f"is {dtype_of(t_info, 'teacher_output')}"
        )
    s_dims, t_dims = dims_of(s_info), dims_of(t_info)
    if s_dims is not None and t_dims is not None and len(s_dims) != len(t_dims):
        raise ValueError(
            f"student_output {student_output!r} has rank {len(s_dims)}, teacher_output "
            f"{teacher_output!r} rank {len(t_dims)}"
        )
    _check_shared_inputs(student, teacher)
    student, teacher = _merge_opsets(student, teacher)

    # Prefix the teacher's clashing names (inputs stay shared).
    s_graph, t_graph = student.graph, teacher.graph
    shared = {vi.name for vi in t_graph.input} & {vi.name for vi in s_graph.input}
    taken = value_names(s_graph) | {o.name for o in s_graph.output} | {output_name}
    t_values = value_names(t_graph) | {o.name for o in t_graph.output}
    renames = {
        n: unique(_prefixed(n), taken | t_values) for n in sorted(t_values - shared) if n in taken
    }
    rename_values(t_graph, renames)
    s_nodes = node_names(s_graph)
    for node in t_graph.node:
        if node.name in s_nodes:
            node.name = unique(_prefixed(node.name), s_nodes | node_names(t_graph))
    teacher_output = renames.get(teacher_output, teacher_output)
    s_functions = {(f.domain, f.name): f for f in student.functions}
    for function in teacher.functions:
        existing = s_functions.get((function.domain, function.name))
        if existing is None:
            student.functions.append(function)
        elif existing.SerializeToString() != function.SerializeToString():
            raise ValueError(
                f"student and teacher define different functions {function.domain}.{function.name}"
            )

    merged = student
    graph = merged.graph
    graph.input.extend(vi for vi in t_graph.input if vi.name not in shared)
    graph.initializer.extend(t_graph.initializer)
    graph.sparse_initializer.extend(t_graph.sparse_initializer)
    graph.node.extend(t_graph.node)
    graph.value_info.extend(t_graph.value_info)
    graph.output.extend(t_graph.output)
    merged.ir_version = max(merged.ir_version, teacher.ir_version)

    # Scaled logits: s / T → log_softmax (inside embed), t / T → softmax.
    names = value_names(graph) | {o.name for o in graph.output} | {output_name}
    nodes = node_names(graph)
    elem = s_info.type.tensor_type.elem_type

    def constant(base: str, value: float) -> str:
        name = unique(f"{output_name}_{base}", names)
        names.add(name)
        tensor = helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [value])
        raw = unique(f"{name}_f32", names)
        names.add(raw)
        graph.node.append(helper.make_node("Constant", [], [raw], value=tensor, name=raw))
        graph.node.append(helper.make_node("Cast", [raw], [name], to=elem, name=name))
        return name

    def node(op: str, inputs: list[str], base: str, **attrs: object) -> str:
        out = unique(f"{output_name}_{base}", names)
        names.add(out)
        graph.node.append(
            helper.make_node(op, inputs, [out], name=unique(out, nodes), **attrs)  # type: ignore[arg-type]
        )
        nodes.add(out)
        return out

    t_const = constant("temperature", float(temperature))
    s_scaled = node("Div", [student_output, t_const], "student_scaled")
    t_scaled = node("Div", [teacher_output, t_const], "teacher_scaled")
    t_probs = node("Softmax", [t_scaled], "teacher_probs", axis=-1)
    kl_name = unique(f"{output_name}_kl", names)
    merged = embed_variant(
        merged,
        s_scaled,
        variant,
        target=t_probs,
        log_softmax=True,
        output_name=kl_name,
    )
    graph = merged.graph
    kl_out = next(o for o in graph.output if o.name == kl_name)
    graph.output.remove(kl_out)
    t2 = constant("temperature_squared", float(temperature) ** 2)
    graph.node.append(helper.make_node("Mul", [kl_name, t2], [output_name], name=output_name))
    graph.output.append(
        helper.make_tensor_value_info(
            output_name, elem, dims_of(kl_out) if variant.reduction == "none" else []
        )
    )
    onnx.checker.check_model(merged)
    return merged
