/*
 * Names for native addresses, in the watchdog thread only: size-checked
 * lookups in .symtab and .dynsym read with libelf, cached per loaded object;
 * a stripped object's symbols are taken from its .gnu_debuglink or build-id
 * file under /usr/lib/debug when present, else from its MiniDebugInfo
 * (.gnu_debugdata, xz). Never called from a signal handler.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sym_info {
	const char *name;   /* symbol name, NULL if none covers the address */
	uintptr_t offset;   /* addr - symbol start */
	const char *object; /* path of the loaded object, NULL if none */
	uintptr_t obj_base; /* load bias of the object */
};

/* Looks addr up. Pointers stay valid until symbols_refresh() or
 * symbols_flush(), also across objects loaded meanwhile. Returns true when
 * at least the object is known. */
bool symbols_lookup(uintptr_t addr, struct sym_info *out);

/* Drops every cached object and table. Only to release memory: lookups and
 * symbols_refresh() notice objects loaded or unloaded by themselves. */
void symbols_flush(void);

/* Re-reads the list of loaded objects if the loader added or removed any
 * since the last look, keeping the tables of objects that stayed, and frees
 * what earlier lookups handed out for objects gone since. Costs one
 * dl_iterate_phdr step when nothing changed: call once before each batch of
 * lookups (a report). A lookup that misses every known object checks too. */
void symbols_refresh(void);

/*
 * For an address in an object that lacks a full symbol table (no .symtab of
 * its own, no debug file, no MiniDebugInfo: at most its dynamic symbols),
 * one sentence that says what would name its frames, for the distribution
 * os-release(5) names; NULL for an object with its symbols, the vDSO or an
 * unknown address. *build_id gets the object's build id in hex, or NULL.
 * On Debian and its derivatives the first call for such an object reads
 * dpkg's file lists (bounded) to name its package; the answer is kept with
 * the object. Call after symbols_lookup of the same address; the strings
 * stay valid as symbols_lookup's.
 */
const char *symbols_help(uintptr_t addr, const char **build_id);

/*
 * Loads the symbols of one ELF file for lookups by file-relative address
 * (st_value space); used by symbols_lookup and by tests and fuzzers on
 * arbitrary (possibly malformed) files. Returns NULL on any error; a valid
 * file without symbols gives an empty table. symtab_load also merges the
 * .symtab of a stripped file's debug file (build-id, then .gnu_debuglink);
 * symtab_load_mem reads only the image given. Both read the .symtab of an
 * object's MiniDebugInfo (.gnu_debugdata) when it has no .symtab of its own
 * (and, for symtab_load, no debug file).
 */
struct symtab;
struct symtab *symtab_load(const char *path);
struct symtab *symtab_load_mem(const void *data, size_t size);
const char *symtab_find(const struct symtab *t, uintptr_t vaddr,
			uintptr_t *offset);
void symtab_free(struct symtab *t);

/* Like symtab_load without the search for a separate debug file. */
struct symtab *symtab_load_nodebug(const char *path);

/* Whether a full symbol table was read (.symtab of the file, of its debug
 * file or of its MiniDebugInfo), not only .dynsym. */
bool symtab_full(const struct symtab *t);

/* For tests: the number of entries and entry i (sorted by address). */
size_t symtab_count(const struct symtab *t);
bool symtab_get(const struct symtab *t, size_t i, uintptr_t *addr,
		uintptr_t *size, const char **name);
