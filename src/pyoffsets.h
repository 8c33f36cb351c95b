/*
 * CPython layouts, one table per minor version, as constants: the library
 * must read whichever interpreter it is loaded into, whatever was installed
 * where it was built. The tables are generated from each interpreter's own
 * headers by scripts/gen-pyoffsets, which also checks them (--check).
 *
 * 3.8-3.12 are used as they are. From 3.13 on the walker takes the offsets
 * from _PyRuntime.debug_offsets at run time, found at the positions `dbg`
 * gives (struct _Py_DebugOffsets changes with every minor version); the
 * table supplies what those do not describe and is trusted only where
 * debug_offsets agree with it. A release newer than the last table is read
 * with that table's positions and checked the same way.
 */
#pragma once

#include <stdint.h>

enum py_layout {
	/* 3.8, 3.9: PyFrameObject chain, f_lasti in bytes, co_lnotab */
	PY_LAYOUT_38 = 1,
	/* 3.10: PyFrameObject chain, f_lasti in code units, co_linetable
	 * (offset, line) pairs */
	PY_LAYOUT_310,
	/* 3.11: _PyInterpreterFrame through tstate->cframe, is_entry, the
	 * location table */
	PY_LAYOUT_311,
	/* 3.12: as 3.11 without is_entry; shim frames owned by the C stack */
	PY_LAYOUT_312,
	/* 3.13: tstate->current_frame, instr_ptr, f_executable */
	PY_LAYOUT_313,
	/* 3.14+: as 3.13, f_executable a tagged _PyStackRef, the eval loop's
	 * entry frame owned by the interpreter */
	PY_LAYOUT_314,
};

/* Byte positions inside struct _Py_DebugOffsets (3.13+) of the uint64_t
 * values the walker reads; -1 when the version has none. */
struct py_dbg_pos {
	int struct_size; /* sizeof(_Py_DebugOffsets) */
	int version, free_threaded;
	int rt_size, rt_interp_head;
	int is_size, is_next, is_threads_head;
	int ts_size, ts_prev, ts_next, ts_interp, ts_current_frame,
		ts_thread_id, ts_native_thread_id, ts_datastack_chunk;
	int fr_size, fr_previous, fr_executable, fr_instr_ptr, fr_localsplus,
		fr_owner;
	int co_size, co_filename, co_name, co_qualname, co_linetable,
		co_firstlineno, co_code_adaptive;
	int ob_size, ob_type;
	int by_size, by_ob_size, by_ob_sval;
	int un_size, un_state, un_length, un_ascii_size, un_compact_size;
	int is_ceval_gil, is_gil, is_gil_locked, is_gil_holder; /* 3.14+ */
};

/* Byte offsets in the named structure; -1 when the version has no such
 * field. See scripts/gen-pyoffsets for what each one is measured from. */
struct py_offsets {
	int major, minor, layout;
	int rt_interp_head;      /* _PyRuntimeState.interpreters.head */
	int is_next;             /* PyInterpreterState.next */
	int is_threads_head;     /* .tstate_head (<3.11) / .threads.head */
	int ts_next;             /* PyThreadState.next */
	int ts_thread_id;        /* .thread_id (pthread_self()) */
	int ts_native_thread_id; /* .native_thread_id (gettid(), 3.11+) */
	int ts_frame;            /* .frame (<3.11), .cframe (3.11, 3.12),
	                            .current_frame (3.13) */
	int ts_size;             /* sizeof(PyThreadState): allocated at least */
	int cf_current_frame;    /* _PyCFrame.current_frame (3.11, 3.12) */
	int cf_previous;         /* _PyCFrame.previous (3.11, 3.12) */
	int ts_datastack_chunk;  /* .datastack_chunk (3.11+): the frame stack */
	int ts_datastack_top;    /* .datastack_top (3.11+) */
	int sc_previous;         /* _PyStackChunk.previous (3.11+) */
	int sc_size;             /* _PyStackChunk.size: bytes, header included */
	int sc_top;              /* _PyStackChunk.top: a full chunk's size in use,
	                            in pointers */
	int sc_data;             /* _PyStackChunk.data */
	int fr_previous;         /* f_back / previous */
	int fr_code;             /* f_code / f_executable */
	int fr_instr;            /* f_lasti (int) / prev_instr / instr_ptr */
	int fr_owner;            /* char owner (3.11+) */
	int fr_is_entry;         /* bool is_entry (3.11) */
	int fr_size;             /* bytes read per frame */
	int owner_generator;     /* FRAME_OWNED_BY_GENERATOR */
	int owner_entry;         /* owner of the frame an eval loop pushes at
	                            its entry (3.12+): FRAME_OWNED_BY_CSTACK,
	                            FRAME_OWNED_BY_INTERPRETER since 3.14 */
	int tag_bits;            /* f_executable's tag bits (Py_TAG_BITS, 3.14+) */
	int ob_type;             /* PyObject.ob_type */
	int co_filename, co_name, co_firstlineno;
	int co_linetable;        /* co_lnotab (<3.10) / co_linetable */
	int co_firsttraceable;   /* int _co_firsttraceable (3.11+) */
	int co_code_adaptive;    /* the bytecode, inline (3.11+) */
	int co_size;             /* bytes read per code object */
	int str_length, str_state;
	int str_ascii_size;      /* sizeof(PyASCIIObject) */
	int str_compact_size;    /* sizeof(PyCompactUnicodeObject) */
	int str_kind_shift;      /* bit of state.kind (3 bits) */
	int str_compact_bit, str_ascii_bit;
	int bytes_size;          /* PyVarObject.ob_size */
	int bytes_sval;          /* PyBytesObject.ob_sval */
	/* The GIL (struct _gil_runtime_state): where it is, and its fields. */
	int rt_gil;              /* _PyRuntimeState.ceval.gil (<3.12) */
	int is_ceval_gil;        /* PyInterpreterState.ceval.gil, the pointer
	                            to the GIL it uses (3.12+) */
	int is_gil;              /* PyInterpreterState._gil, its own (3.12+) */
	int gil_locked;          /* int locked */
	int gil_holder;          /* PyThreadState *last_holder */
	int gil_switch;          /* unsigned long switch_number */
	int gil_cond, gil_cond_size;   /* pthread_cond_t cond: where threads
	                                  wait for the GIL */
	int gil_mutex, gil_mutex_size; /* pthread_mutex_t mutex */
	struct py_dbg_pos dbg;   /* 3.13+ */
};

/* The table of 3.minor, NULL when there is none. */
const struct py_offsets *pyoffsets_get(int major, int minor);

/* The table of the newest version slowdog has one for. */
const struct py_offsets *pyoffsets_newest(void);
