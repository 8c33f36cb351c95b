/*
 * Size-checked symbol tables read with libelf, and a per-object cache for
 * naming the instruction pointers of captured stacks.
 *
 * Runs in the watchdog thread only. The files read here are whatever the
 * host mapped, so every offset, size, index and string taken from a file is
 * checked against the file before use: a malformed or truncated object gives
 * no names, never a crash. Files are read with pread (ELF_C_READ), not
 * mmap'd, so a file truncated under us gives a short read, not SIGBUS.
 *
 * Why not elfutils' own symbolizer (libdw's Dwfl), which also finds debug
 * files and reads MiniDebugInfo: naming the 11 frames of a report in
 * Debian's python3.11 with its debug file cost Dwfl 60 M instructions and
 * 2.6 MiB of the worker's memory against 13 M and 0.9 MiB here, and with
 * source lines from DWARF (what it would add) 666 M instructions and 40 MiB
 * per worker; without the debug file, 24 M and 8 MiB against 1.8 M and
 * 0.5 MiB. And the fuzzer covers this file's parsers, not Debian's libdw,
 * which is not instrumented: on the same seeds a Dwfl target ran blind at
 * 820 inputs/s (150,000 in 3 minutes, nothing found) against 7,200/s here.
 */
#include "symbols.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <libelf.h>
#include <limits.h>
#include <link.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "real.h"

/* Bounds against hostile or absurd files: memory use stays bounded. */
#define SYMTAB_MAX_SYMS (4u << 20)
#define SYMTAB_MAX_FILE ((uint64_t)2 << 30)
#define SYMTAB_MAX_SECTIONS 100000u
#define SYMTAB_MAX_NAMES ((size_t)256 << 20) /* bytes of names kept */
#define SYM_NAME_MAX 1024 /* longer (C++) names are cut */
#define BUILD_ID_MAX 64
/* Largest section read into memory, by use. */
#define MAX_SYMS_BYTES ((size_t)SYMTAB_MAX_SYMS * sizeof(Elf64_Sym))
#define MAX_STRS_BYTES ((size_t)256 << 20)
#define MAX_NOTE_BYTES ((size_t)64 << 10)
#define DEBUG_ROOT "/usr/lib/debug"
/* MiniDebugInfo (.gnu_debugdata): an xz-compressed ELF file with a .symtab
 * of the functions .dynsym lacks. Bounds on its size, packed and unpacked,
 * and on the decoder's memory (xz -9 needs 65 MiB). */
#define MAX_XZ_IN ((size_t)64 << 20)
#define MAX_XZ_OUT ((size_t)256 << 20)
#define XZ_MEMLIMIT ((uint64_t)96 << 20)

/* Aliases within this many preceding entries are searched for an enclosing
 * symbol when the nearest one does not cover the address (glibc's string
 * functions nest entry points inside one sized symbol). */
#define SYMTAB_NEST_SCAN 16

struct sym {
	uintptr_t addr;
	uintptr_t end; /* addr + st_size, > addr */
	const char *name; /* into symtab.names */
};

struct symtab {
	struct sym *syms; /* sorted by addr, one entry per addr */
	size_t n;
	char *names;
	bool full; /* a .symtab was read (own, debug file or MiniDebugInfo) */
};

/*
 * The tables of a whole object are large (hundreds of KiB for libpython):
 * they get pages of their own. From malloc they would grow the watchdog's
 * arena, which glibc never shrinks once its trim threshold has moved, and
 * freeing them would move glibc's mmap threshold for the whole
 * application. A block is preceded by its mapping's size.
 */
#define BIG_HDR 16

static void *big_alloc(size_t n)
{
	if (n > SIZE_MAX - BIG_HDR)
		return NULL;
	size_t total = n + BIG_HDR;
	unsigned char *p = mmap(NULL, total, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	memcpy(p, &total, sizeof(total));
	return p + BIG_HDR;
}

static void big_free(void *q)
{
	if (!q)
		return;
	unsigned char *p = (unsigned char *)q - BIG_HDR;
	size_t total;
	memcpy(&total, p, sizeof(total));
	munmap(p, total);
}

static void *big_realloc(void *q, size_t n)
{
	if (!q)
		return big_alloc(n);
	if (n > SIZE_MAX - BIG_HDR)
		return NULL;
	unsigned char *p = (unsigned char *)q - BIG_HDR;
	size_t total, want = n + BIG_HDR;
	memcpy(&total, p, sizeof(total));
	p = mremap(p, total, want, MREMAP_MAYMOVE);
	if (p == MAP_FAILED)
		return NULL;
	memcpy(p, &want, sizeof(want));
	return p + BIG_HDR;
}

/* ---------------------------------------------------------------------- */
/* One ELF file (or image in memory) open through libelf.                  */

#define OWNED_MAX 16

struct elf_file {
	int fd; /* -1 for an image in memory */
	Elf *elf;
	uint64_t size;
	size_t shnum;
	dev_t dev;
	ino_t ino;
	uint8_t build_id[BUILD_ID_MAX];
	size_t build_id_len;
	char debuglink[256]; /* empty: none */
	uint32_t debuglink_crc;
	bool has_symtab;
	size_t debugdata; /* index of .gnu_debugdata, 0: none */
	/* Sections read from the file (section_bytes), freed at close. */
	void *owned[OWNED_MAX];
	int owned_n;
};

static void elf_file_close(struct elf_file *f)
{
	for (int i = 0; i < f->owned_n; i++)
		big_free(f->owned[i]);
	f->owned_n = 0;
	if (f->elf)
		elf_end(f->elf);
	if (f->fd >= 0)
		real_close(f->fd);
	f->elf = NULL;
	f->fd = -1;
}

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/*
 * Checks the ELF header before libelf sees the file: only native 64-bit
 * little-endian objects (the only ones this process can have loaded; and
 * libelf never converts them in place, so a read-only image is safe), with a
 * section header table inside the file. The section count is e_shnum, or
 * 0 with extended numbering (the caller reads it from section 0).
 */
static bool ehdr_check(const Elf64_Ehdr *eh, uint64_t size, size_t *shnum_out)
{
	if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh->e_ident[EI_VERSION] != EV_CURRENT ||
	    eh->e_version != EV_CURRENT)
		return false;
	/* The gABI aligns the table; libelf would hand out misaligned
	 * pointers into an image otherwise. */
	if (eh->e_shoff == 0 || eh->e_shoff % 8 != 0 ||
	    eh->e_shentsize != sizeof(Elf64_Shdr))
		return false;
	if (eh->e_shoff > size || size - eh->e_shoff < sizeof(Elf64_Shdr))
		return false;
	*shnum_out = eh->e_shnum;
	return true;
}

static bool shnum_check(uint64_t shoff, size_t shnum, uint64_t size)
{
	return shnum > 0 && shnum <= SYMTAB_MAX_SECTIONS &&
	       shoff <= size && (size - shoff) / sizeof(Elf64_Shdr) >= shnum;
}

/* Pre-checks a file's headers with plain preads: 0 or -errno. */
static int elf_precheck_fd(int fd, uint64_t size)
{
	Elf64_Ehdr eh;
	Elf64_Shdr sh0;
	size_t shnum;

	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh))
		return -ENOEXEC;
	if (!ehdr_check(&eh, size, &shnum))
		return -ENOEXEC;
	if (shnum == 0) {
		/* Extended numbering: the count is in section 0. */
		if (pread(fd, &sh0, sizeof(sh0), (off_t)eh.e_shoff) !=
		    (ssize_t)sizeof(sh0))
			return -ENOEXEC;
		if (sh0.sh_size > SYMTAB_MAX_SECTIONS)
			return -ENOEXEC;
		shnum = (size_t)sh0.sh_size;
	}
	return shnum_check(eh.e_shoff, shnum, size) ? 0 : -ENOEXEC;
}

static int elf_precheck_mem(const void *data, size_t size)
{
	Elf64_Ehdr eh;
	Elf64_Shdr sh0;
	size_t shnum;

	if (size < sizeof(eh))
		return -ENOEXEC;
	memcpy(&eh, data, sizeof(eh));
	if (!ehdr_check(&eh, size, &shnum))
		return -ENOEXEC;
	if (shnum == 0) {
		memcpy(&sh0, (const char *)data + eh.e_shoff, sizeof(sh0));
		if (sh0.sh_size > SYMTAB_MAX_SECTIONS)
			return -ENOEXEC;
		shnum = (size_t)sh0.sh_size;
	}
	return shnum_check(eh.e_shoff, shnum, size) ? 0 : -ENOEXEC;
}

/* A copy of section idx's header: an image in memory may hold it
 * misaligned, and libelf then points into the image. */
static Elf_Scn *section_header(const struct elf_file *f, size_t idx,
			       Elf64_Shdr *out)
{
	Elf_Scn *scn;
	const Elf64_Shdr *sh;

	if (idx == 0 || idx >= f->shnum)
		return NULL;
	scn = elf_getscn(f->elf, idx);
	sh = scn ? elf64_getshdr(scn) : NULL;
	if (!sh)
		return NULL;
	memcpy(out, sh, sizeof(*out));
	return scn;
}

/* Whether a section's contents lie inside the file and can be read. */
static bool section_readable(const struct elf_file *f, const Elf64_Shdr *sh)
{
	if (sh->sh_type == SHT_NOBITS || sh->sh_type == SHT_NULL)
		return false;
	/* Compressed sections would need inflating: symbol tables never
	 * are in practice, and notes are tiny. */
	if (sh->sh_flags & SHF_COMPRESSED)
		return false;
	return sh->sh_offset <= f->size &&
	       sh->sh_size <= f->size - sh->sh_offset;
}

/*
 * The bytes of a section, checked to be exactly what its header says and
 * at most max bytes. From a file they are read into pages of their own
 * (see big_alloc; libelf would copy them into malloc'd memory), kept until
 * the file is closed; from an image in memory, libelf points into it.
 */
static const void *section_bytes(struct elf_file *f, size_t idx, size_t max,
				 Elf64_Shdr *sh, size_t *len)
{
	Elf_Scn *scn;
	Elf_Data *d;

	scn = section_header(f, idx, sh);
	if (!scn || !section_readable(f, sh) || sh->sh_size == 0 ||
	    sh->sh_size > max)
		return NULL;
	if (f->fd < 0) {
		d = elf_getdata(scn, NULL);
		if (!d || !d->d_buf || d->d_size != sh->sh_size)
			return NULL;
		*len = d->d_size;
		return d->d_buf;
	}
	if (sh->sh_type == SHT_NOBITS || f->owned_n == OWNED_MAX)
		return NULL;
	unsigned char *p = big_alloc(sh->sh_size);
	if (!p)
		return NULL;
	for (size_t got = 0; got < sh->sh_size;) {
		ssize_t r = pread(f->fd, p + got, sh->sh_size - got,
				  (off_t)(sh->sh_offset + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) { /* truncated under us, or unreadable */
			big_free(p);
			return NULL;
		}
		got += (size_t)r;
	}
	f->owned[f->owned_n++] = p;
	*len = sh->sh_size;
	return p;
}

/* The NUL-terminated string at off in a string table, or NULL. */
static const char *strtab_at(const char *tab, size_t len, size_t off)
{
	if (off >= len || memchr(tab + off, '\0', len - off) == NULL)
		return NULL;
	return tab + off;
}

/* Finds the NT_GNU_BUILD_ID note in a note area of the given alignment. */
static bool notes_build_id(const uint8_t *p, size_t n, size_t align,
			   uint8_t *id, size_t *id_len)
{
	size_t off = 0;

	if (align != 8)
		align = 4;
	while (n - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr h;
		size_t name_off, desc_off;

		memcpy(&h, p + off, sizeof(h));
		name_off = off + sizeof(h);
		if (h.n_namesz > n - name_off)
			return false;
		desc_off = align_up(name_off + h.n_namesz, align);
		if (desc_off > n || h.n_descsz > n - desc_off)
			return false;
		if (h.n_type == NT_GNU_BUILD_ID && h.n_namesz == 4 &&
		    memcmp(p + name_off, "GNU", 4) == 0 && h.n_descsz > 0 &&
		    h.n_descsz <= BUILD_ID_MAX) {
			memcpy(id, p + desc_off, h.n_descsz);
			*id_len = h.n_descsz;
			return true;
		}
		off = desc_off + h.n_descsz;
		if (off > n)
			return false;
		off = align_up(off, align);
		if (off > n)
			return false;
	}
	return false;
}

static void debuglink_parse(struct elf_file *f, const char *p, size_t n)
{
	size_t len = strnlen(p, n);
	size_t crc_off = align_up(len + 1, 4);

	if (len == 0 || len >= sizeof(f->debuglink) || crc_off > n ||
	    n - crc_off < 4)
		return;
	/* A bare file name: a path would let the file point anywhere. */
	if (memchr(p, '/', len) || strcmp(p, ".") == 0 || strcmp(p, "..") == 0)
		return;
	memcpy(f->debuglink, p, len + 1);
	memcpy(&f->debuglink_crc, p + crc_off, 4);
}

/* Reads what later steps need from the section headers. */
static int elf_file_scan(struct elf_file *f)
{
	const Elf64_Ehdr *ehp;
	Elf64_Ehdr eh;
	Elf64_Shdr sh;
	const char *shstr = NULL;
	size_t shstr_len = 0, shstrndx;
	size_t i;

	if (elf_kind(f->elf) != ELF_K_ELF)
		return -ENOEXEC;
	ehp = elf64_getehdr(f->elf);
	if (!ehp || elf_getshdrnum(f->elf, &f->shnum) != 0)
		return -ENOEXEC;
	memcpy(&eh, ehp, sizeof(eh));
	if (!shnum_check(eh.e_shoff, f->shnum, f->size))
		return -ENOEXEC;
	if (elf_getshdrstrndx(f->elf, &shstrndx) == 0 && shstrndx < f->shnum) {
		shstr = section_bytes(f, shstrndx, MAX_STRS_BYTES, &sh,
				      &shstr_len);
		if (shstr && sh.sh_type != SHT_STRTAB)
			shstr = NULL;
	}

	for (i = 1; i < f->shnum; i++) {
		const void *p;
		const char *name;
		size_t len;

		if (!section_header(f, i, &sh))
			return -ENOEXEC;
		if (sh.sh_type == SHT_SYMTAB && sh.sh_size > 0 &&
		    section_readable(f, &sh))
			f->has_symtab = true;
		if (sh.sh_type == SHT_NOTE && f->build_id_len == 0) {
			p = section_bytes(f, i, MAX_NOTE_BYTES, &sh, &len);
			if (p)
				notes_build_id(p, len, sh.sh_addralign,
					       f->build_id, &f->build_id_len);
		}
		if (sh.sh_type == SHT_PROGBITS && shstr && !f->debuglink[0]) {
			name = strtab_at(shstr, shstr_len, sh.sh_name);
			if (name && strcmp(name, ".gnu_debuglink") == 0) {
				p = section_bytes(f, i, MAX_NOTE_BYTES, &sh,
						  &len);
				if (p)
					debuglink_parse(f, p, len);
			}
		}
		if (sh.sh_type == SHT_PROGBITS && shstr && !f->debugdata &&
		    sh.sh_size > 0 && section_readable(f, &sh)) {
			name = strtab_at(shstr, shstr_len, sh.sh_name);
			if (name && strcmp(name, ".gnu_debugdata") == 0)
				f->debugdata = i;
		}
	}
	return 0;
}

static int elf_file_open(struct elf_file *f, const char *path)
{
	struct stat st;
	int err;

	memset(f, 0, sizeof(*f));
	/* O_NONBLOCK: opening a FIFO put where a library was must not hang. */
	f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (f->fd < 0)
		return -errno;
	if (fstat(f->fd, &st) != 0) {
		err = -errno;
		goto fail;
	}
	err = -ENOEXEC;
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > SYMTAB_MAX_FILE)
		goto fail;
	f->size = (uint64_t)st.st_size;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	err = elf_precheck_fd(f->fd, f->size);
	if (err)
		goto fail;
	err = -ENOEXEC;
	if (elf_version(EV_CURRENT) == EV_NONE)
		goto fail;
	f->elf = elf_begin(f->fd, ELF_C_READ, NULL);
	if (!f->elf)
		goto fail;
	err = elf_file_scan(f);
	if (err)
		goto fail;
	return 0;
fail:
	elf_file_close(f);
	return err;
}

static int elf_file_mem(struct elf_file *f, const void *data, size_t size)
{
	int err;

	memset(f, 0, sizeof(*f));
	f->fd = -1;
	if (!data || (uint64_t)size > SYMTAB_MAX_FILE)
		return -EINVAL;
	f->size = size;
	err = elf_precheck_mem(data, size);
	if (err)
		return err;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return -ENOEXEC;
	/* elf_memory wants a writable image, but with a native-order file
	 * (checked above) libelf only reads it. */
	f->elf = elf_memory((char *)(uintptr_t)data, size);
	if (!f->elf)
		return -ENOEXEC;
	err = elf_file_scan(f);
	if (err)
		elf_file_close(f);
	return err;
}

/* ---------------------------------------------------------------------- */
/* Building a table.                                                        */

struct cand {
	uintptr_t addr;
	uintptr_t end;
	const char *name; /* into libelf's copy of a string table */
	uint32_t len;
	uint32_t rank; /* lower wins among aliases */
};

struct builder {
	struct cand *v;
	size_t n;
	size_t cap;
	size_t name_bytes; /* before dedup: bounds what finish copies */
};

/*
 * Among aliases at one address the reported name is the one a reader knows:
 * fewest leading underscores (read over __libc_read), then global over weak
 * over local, then typed functions over untyped labels.
 */
static uint32_t sym_rank(const char *name, unsigned bind, unsigned type)
{
	uint32_t u = 0, b, t;

	while (u < 3 && name[u] == '_')
		u++;
	b = bind == STB_GLOBAL ? 0 : bind == STB_WEAK ? 1 : 2;
	t = type == STT_NOTYPE ? 1 : 0;
	return (u << 4) | (b << 2) | t;
}

static int builder_add(struct builder *b, const struct cand *c)
{
	if (b->name_bytes + c->len + 1 > SYMTAB_MAX_NAMES)
		return -E2BIG;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1024;
		struct cand *v;

		if (b->n >= SYMTAB_MAX_SYMS)
			return -E2BIG;
		if (cap > SYMTAB_MAX_SYMS)
			cap = SYMTAB_MAX_SYMS;
		v = big_realloc(b->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = *c;
	b->name_bytes += c->len + 1;
	return 0;
}

static bool section_is_code(const struct elf_file *f, size_t idx)
{
	Elf64_Shdr sh;

	return section_header(f, idx, &sh) && (sh.sh_flags & SHF_EXECINSTR);
}

/* Adds the code symbols of every section of the given type (SHT_SYMTAB or
 * SHT_DYNSYM). Stops quietly at the symbol cap. */
static int builder_collect(struct builder *b, struct elf_file *f,
			   Elf64_Word type)
{
	size_t i;

	for (i = 1; i < f->shnum; i++) {
		Elf64_Shdr sh, strsh;
		const unsigned char *syms;
		const char *strs;
		size_t syms_len, strs_len, k, count;

		if (!section_header(f, i, &sh) || sh.sh_type != type)
			continue;
		if (sh.sh_entsize != sizeof(Elf64_Sym) || sh.sh_link == i ||
		    sh.sh_link >= f->shnum)
			continue;
		syms = section_bytes(f, i, MAX_SYMS_BYTES, &sh, &syms_len);
		if (!syms || syms_len % sizeof(Elf64_Sym) != 0)
			continue;
		strs = section_bytes(f, sh.sh_link, MAX_STRS_BYTES, &strsh,
				     &strs_len);
		if (!strs || strsh.sh_type != SHT_STRTAB)
			continue;

		count = syms_len / sizeof(Elf64_Sym);
		for (k = 1; k < count; k++) {
			Elf64_Sym s;
			unsigned st_type, st_bind;
			struct cand c;
			size_t len;
			int err;

			memcpy(&s, syms + k * sizeof(s), sizeof(s));
			st_type = ELF64_ST_TYPE(s.st_info);
			st_bind = ELF64_ST_BIND(s.st_info);
			if (s.st_size == 0 || s.st_name == 0 ||
			    s.st_shndx == SHN_UNDEF || s.st_shndx == SHN_ABS ||
			    s.st_shndx == SHN_COMMON)
				continue;
			if (st_type == STT_NOTYPE) {
				/* Sized labels in code are hand-written
				 * assembly functions; elsewhere, data. */
				if (!section_is_code(f, s.st_shndx))
					continue;
			} else if (st_type != STT_FUNC &&
				   st_type != STT_GNU_IFUNC) {
				continue;
			}
			if (s.st_value > UINTPTR_MAX - s.st_size)
				continue;
			c.name = strtab_at(strs, strs_len, s.st_name);
			if (!c.name || !c.name[0])
				continue;
			len = strnlen(c.name, SYM_NAME_MAX);
			c.addr = s.st_value;
			c.end = s.st_value + s.st_size;
			c.len = (uint32_t)len;
			c.rank = sym_rank(c.name, st_bind, st_type);
			err = builder_add(b, &c);
			if (err == -E2BIG)
				return 0;
			if (err)
				return err;
		}
	}
	return 0;
}

static int cand_cmp(const void *pa, const void *pb)
{
	const struct cand *a = pa, *b = pb;

	if (a->addr != b->addr)
		return a->addr < b->addr ? -1 : 1;
	if (a->rank != b->rank)
		return a->rank < b->rank ? -1 : 1;
	if (a->end != b->end)
		return a->end > b->end ? -1 : 1;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* Sorts, keeps one name per address and copies the names out of libelf's
 * buffers, so the table outlives the files. */
static struct symtab *builder_finish(struct builder *b)
{
	struct symtab *t;
	size_t i, n = 0, bytes = 0;
	char *p;

	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	if (b->n == 0)
		return t;

	qsort(b->v, b->n, sizeof(*b->v), cand_cmp);
	for (i = 0; i < b->n; i++) {
		if (n > 0 && b->v[n - 1].addr == b->v[i].addr)
			continue;
		b->v[n++] = b->v[i];
		bytes += b->v[i].len + 1;
	}

	t->syms = big_alloc(n * sizeof(*t->syms));
	t->names = big_alloc(bytes);
	if (!t->syms || !t->names) {
		symtab_free(t);
		return NULL;
	}
	p = t->names;
	for (i = 0; i < n; i++) {
		memcpy(p, b->v[i].name, b->v[i].len);
		p[b->v[i].len] = '\0';
		t->syms[i].addr = b->v[i].addr;
		t->syms[i].end = b->v[i].end;
		t->syms[i].name = p;
		p += b->v[i].len + 1;
	}
	t->n = n;
	return t;
}

/* ---------------------------------------------------------------------- */
/* Separate debug files.                                                    */

/* CRC-32 as used by .gnu_debuglink (the zlib/IEEE one). */
static int file_crc32(int fd, uint64_t size, uint32_t *out)
{
	const size_t buf_len = 65536;
	uint32_t table[256], crc = 0xffffffffu;
	unsigned char *buf;
	uint64_t off = 0;
	uint32_t i, k;
	int err = 0;

	for (i = 0; i < 256; i++) {
		uint32_t c = i;

		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		table[i] = c;
	}
	buf = big_alloc(buf_len);
	if (!buf)
		return -ENOMEM;
	while (off < size) {
		ssize_t r = pread(fd, buf, buf_len, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = -EIO;
			break;
		}
		for (i = 0; i < (uint32_t)r; i++)
			crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
		off += (uint64_t)r;
	}
	big_free(buf);
	*out = crc ^ 0xffffffffu;
	return err;
}

/*
 * Opens a debug file candidate and accepts it only if it has a .symtab and
 * belongs to the object: same build-id when both have one, else (debuglink
 * candidates only) a matching CRC.
 */
static bool debug_try(struct elf_file *g, const char *path,
		      const struct elf_file *obj, const uint8_t *id,
		      size_t id_len, bool by_debuglink)
{
	bool ok = false;
	uint32_t crc;

	if (elf_file_open(g, path) != 0)
		return false;
	if (obj->fd >= 0 && g->dev == obj->dev && g->ino == obj->ino)
		goto out;
	if (!g->has_symtab)
		goto out;
	if (id_len > 0 && g->build_id_len > 0)
		ok = g->build_id_len == id_len &&
		     memcmp(g->build_id, id, id_len) == 0;
	else if (by_debuglink)
		ok = file_crc32(g->fd, g->size, &crc) == 0 &&
		     crc == obj->debuglink_crc;
out:
	if (!ok)
		elf_file_close(g);
	return ok;
}

static bool debug_find(struct elf_file *g, const struct elf_file *obj,
		       const char *obj_path, const uint8_t *id, size_t id_len)
{
	char path[PATH_MAX], dir[PATH_MAX];
	const char *slash;
	size_t i, o;
	int n;

	/* By build id under /usr/lib/debug, then under the tree the object
	 * was installed in when that is not / (packages unpacked into a
	 * directory of their own: DIR/usr/bin/x has DIR/usr/lib/debug). */
	for (int pass = 0; pass < 2 && id_len >= 2; pass++) {
		const char *usr = obj_path ? strstr(obj_path, "/usr/") : NULL;
		size_t plen = 0;
		if (pass == 1) {
			if (!usr || usr == obj_path || obj_path[0] != '/' ||
			    (size_t)(usr - obj_path) >= sizeof(path) / 2)
				break;
			plen = (size_t)(usr - obj_path);
			memcpy(path, obj_path, plen);
		}
		o = plen + (size_t)snprintf(path + plen, sizeof(path) - plen,
					    DEBUG_ROOT "/.build-id/%02x/", id[0]);
		for (i = 1; i < id_len && o + 3 < sizeof(path); i++)
			o += (size_t)snprintf(path + o, sizeof(path) - o,
					      "%02x", id[i]);
		if (o + sizeof(".debug") <= sizeof(path)) {
			memcpy(path + o, ".debug", sizeof(".debug"));
			if (debug_try(g, path, obj, id, id_len, false))
				return true;
		}
	}

	if (!obj->debuglink[0] || !obj_path)
		return false;
	slash = strrchr(obj_path, '/');
	if (slash) {
		size_t dlen = (size_t)(slash - obj_path);

		if (dlen >= sizeof(dir))
			return false;
		memcpy(dir, obj_path, dlen);
		dir[dlen] = '\0';
	} else {
		strcpy(dir, ".");
	}

	n = snprintf(path, sizeof(path), "%s/%s", dir, obj->debuglink);
	if (n > 0 && (size_t)n < sizeof(path) &&
	    debug_try(g, path, obj, id, id_len, true))
		return true;
	n = snprintf(path, sizeof(path), "%s/.debug/%s", dir, obj->debuglink);
	if (n > 0 && (size_t)n < sizeof(path) &&
	    debug_try(g, path, obj, id, id_len, true))
		return true;
	if (dir[0] == '/') {
		n = snprintf(path, sizeof(path), DEBUG_ROOT "%s/%s", dir,
			     obj->debuglink);
		if (n > 0 && (size_t)n < sizeof(path) &&
		    debug_try(g, path, obj, id, id_len, true))
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------------- */
/* MiniDebugInfo.                                                           */

/* liblzma's buffers on pages of their own, as the tables (see big_alloc). */
static void *xz_alloc(void *opaque, size_t nmemb, size_t size)
{
	(void)opaque;
	if (size && nmemb > SIZE_MAX / size)
		return NULL;
	return big_alloc(nmemb * size);
}

static void xz_free(void *opaque, void *ptr)
{
	(void)opaque;
	big_free(ptr);
}

/* Unpacks f's .gnu_debugdata: NULL when there is none, or it is damaged,
 * or it unpacks to more than MAX_XZ_OUT. Free with big_free. */
static unsigned char *xz_unpack(struct elf_file *f, size_t *out_len)
{
	const lzma_allocator alloc = { xz_alloc, xz_free, NULL };
	lzma_stream st = LZMA_STREAM_INIT;
	unsigned char *out = NULL;
	size_t in_len, cap = 0;
	const void *in;
	Elf64_Shdr sh;
	lzma_ret ret;

	if (!f->debugdata)
		return NULL;
	in = section_bytes(f, f->debugdata, MAX_XZ_IN, &sh, &in_len);
	if (!in)
		return NULL;
	st.allocator = &alloc;
	if (lzma_stream_decoder(&st, XZ_MEMLIMIT, 0) != LZMA_OK)
		return NULL;
	st.next_in = in;
	st.avail_in = in_len;
	do {
		if (st.avail_out == 0) {
			size_t len = cap, ncap;
			unsigned char *n;

			if (cap >= MAX_XZ_OUT)
				goto fail;
			ncap = cap ? cap * 2 : align_up(in_len * 4, 65536);
			if (ncap > MAX_XZ_OUT || ncap < cap)
				ncap = MAX_XZ_OUT;
			n = big_realloc(out, ncap);
			if (!n)
				goto fail;
			out = n;
			cap = ncap;
			st.next_out = out + len;
			st.avail_out = cap - len;
		}
		ret = lzma_code(&st, LZMA_FINISH);
	} while (ret == LZMA_OK);
	if (ret != LZMA_STREAM_END)
		goto fail;
	*out_len = cap - st.avail_out;
	lzma_end(&st);
	return out;
fail:
	lzma_end(&st);
	big_free(out);
	return NULL;
}

/*
 * Adds the .symtab of f's MiniDebugInfo. The unpacked image (*img) and its
 * elf_file (m) hold the names until builder_finish: the caller frees both.
 * Sets *found when a .symtab was read. The image's own .gnu_debugdata, if
 * any, is not followed.
 */
static int minidebug_collect(struct builder *b, struct elf_file *f,
			     struct elf_file *m, unsigned char **img,
			     bool *found)
{
	size_t len;
	int err;

	*img = xz_unpack(f, &len);
	if (!*img)
		return 0;
	if (elf_file_mem(m, *img, len) != 0) {
		m->elf = NULL;
		m->fd = -1;
		return 0;
	}
	if (!m->has_symtab)
		return 0;
	err = builder_collect(b, m, SHT_SYMTAB);
	if (err == 0)
		*found = true;
	return err;
}

/* ---------------------------------------------------------------------- */
/* Loading.                                                                 */

struct load_req {
	const char *file; /* what to open */
	const char *real_path; /* where it lives, for .gnu_debuglink; or NULL */
	const uint8_t *build_id; /* of the mapped image, if known */
	size_t build_id_len;
	bool debug; /* look for a separate debug file if stripped */
};

static struct symtab *symtab_load_req(const struct load_req *r)
{
	struct elf_file f, g = { .fd = -1 }, m = { .fd = -1 };
	struct builder b = { 0 };
	struct symtab *t = NULL;
	unsigned char *mini = NULL;
	const uint8_t *id;
	size_t id_len;
	bool file_ok = true, full = false;

	if (elf_file_open(&f, r->file) != 0) {
		/* Gone or unreadable since it was mapped: a debug file with
		 * the mapped image's build-id still names it. */
		if (!r->debug || r->build_id_len == 0)
			return NULL;
		file_ok = false;
	}

	/* A file replaced on disk since it was mapped (a package upgrade
	 * under a running server) has symbols for other code: use only a
	 * debug file matching the mapped image then. */
	if (r->build_id_len > 0 && f.build_id_len > 0 &&
	    (r->build_id_len != f.build_id_len ||
	     memcmp(r->build_id, f.build_id, f.build_id_len) != 0))
		file_ok = false;
	id = r->build_id_len ? r->build_id : f.build_id;
	id_len = r->build_id_len ? r->build_id_len : f.build_id_len;

	if (file_ok) {
		if (builder_collect(&b, &f, SHT_SYMTAB) != 0 ||
		    builder_collect(&b, &f, SHT_DYNSYM) != 0)
			goto out;
		full = f.has_symtab;
	}
	if (r->debug && !full &&
	    debug_find(&g, &f, file_ok ? r->real_path : NULL, id, id_len)) {
		if (builder_collect(&b, &g, SHT_SYMTAB) != 0)
			goto out;
		full = true;
	}
	/* No debug file: the functions of the MiniDebugInfo (Fedora's and
	 * RHEL's stripped objects carry one). */
	if (file_ok && !full &&
	    minidebug_collect(&b, &f, &m, &mini, &full) != 0)
		goto out;
	t = builder_finish(&b);
	if (t)
		t->full = full;
out:
	big_free(b.v);
	elf_file_close(&m);
	big_free(mini);
	elf_file_close(&g);
	elf_file_close(&f);
	return t;
}

struct symtab *symtab_load(const char *path)
{
	struct load_req r = {
		.file = path,
		.real_path = path,
		.debug = true,
	};

	if (!path)
		return NULL;
	return symtab_load_req(&r);
}

struct symtab *symtab_load_nodebug(const char *path)
{
	struct load_req r = { .file = path };

	if (!path)
		return NULL;
	return symtab_load_req(&r);
}

struct symtab *symtab_load_mem(const void *data, size_t size)
{
	struct elf_file f, m = { .fd = -1 };
	struct builder b = { 0 };
	struct symtab *t = NULL;
	unsigned char *mini = NULL;
	bool full;

	if (elf_file_mem(&f, data, size) != 0)
		return NULL;
	full = f.has_symtab;
	if (builder_collect(&b, &f, SHT_SYMTAB) == 0 &&
	    builder_collect(&b, &f, SHT_DYNSYM) == 0 &&
	    (full || minidebug_collect(&b, &f, &m, &mini, &full) == 0))
		t = builder_finish(&b);
	if (t)
		t->full = full;
	big_free(b.v);
	elf_file_close(&m);
	big_free(mini);
	elf_file_close(&f);
	return t;
}

const char *symtab_find(const struct symtab *t, uintptr_t vaddr,
			uintptr_t *offset)
{
	size_t lo = 0, hi, i, stop;

	if (!t || t->n == 0)
		return NULL;
	/* Last entry with addr <= vaddr. */
	hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->syms[mid].addr <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	i = lo - 1;
	stop = i >= SYMTAB_NEST_SCAN ? i - SYMTAB_NEST_SCAN : 0;
	for (;; i--) {
		if (vaddr < t->syms[i].end) {
			if (offset)
				*offset = vaddr - t->syms[i].addr;
			return t->syms[i].name;
		}
		if (i == stop)
			return NULL;
	}
}

bool symtab_full(const struct symtab *t)
{
	return t && t->full;
}

size_t symtab_count(const struct symtab *t)
{
	return t ? t->n : 0;
}

bool symtab_get(const struct symtab *t, size_t i, uintptr_t *addr,
		uintptr_t *size, const char **name)
{
	if (!t || i >= t->n)
		return false;
	*addr = t->syms[i].addr;
	*size = t->syms[i].end - t->syms[i].addr;
	*name = t->syms[i].name;
	return true;
}

void symtab_free(struct symtab *t)
{
	if (!t)
		return;
	big_free(t->syms);
	big_free(t->names);
	free(t);
}

/* ---------------------------------------------------------------------- */
/* The cache of loaded objects.                                             */

struct object {
	char *path; /* reported */
	char *file; /* opened; NULL when the object has no file */
	char *real_path; /* for .gnu_debuglink; NULL: same as file */
	uintptr_t bias; /* dlpi_addr */
	const void *image; /* the vDSO: its ELF image in memory */
	size_t image_size;
	uint8_t build_id[BUILD_ID_MAX];
	size_t build_id_len;
	bool loaded; /* syms were tried (NULL: none to be had) */
	struct symtab *syms;
	bool helped; /* help and build_hex were made (NULL: none) */
	char *help;
	char *build_hex;
};

struct seg {
	uintptr_t lo;
	uintptr_t hi;
	size_t obj;
};

/*
 * Owned by the watchdog thread, which alone calls symbols_*: no lock.
 * adds/subs are the loader's counters at the last scan; a hit trusts the
 * table, a miss re-checks them. Objects gone at a rescan wait in retired
 * until symbols_refresh/flush, so names handed out earlier in a batch of
 * lookups stay valid when a later lookup in the batch rescans.
 */
static struct {
	struct object *objs;
	size_t nobjs;
	struct seg *segs;
	size_t nsegs;
	struct object *retired;
	size_t nretired;
	unsigned long long adds;
	unsigned long long subs;
	bool scanned;
} cache;

struct scan {
	struct object *objs;
	size_t nobjs, capobjs;
	struct seg *segs;
	size_t nsegs, capsegs;
	uintptr_t at_phdr;
	uintptr_t vdso;
	size_t page;
	const char *exe_path;
	const char *exe_real;
	const char *exe_file; /* what to open: /proc/self/exe, or the program
	                         the loader was told to run */
	unsigned long long adds;
	unsigned long long subs;
	int err;
};

#define PHDR_INFO_HAS_COUNTERS(size)                                  \
	((size) >= offsetof(struct dl_phdr_info, dlpi_subs) +         \
			   sizeof(((struct dl_phdr_info *)0)->dlpi_subs))

static void object_free(struct object *o)
{
	free(o->path);
	free(o->file);
	free(o->real_path);
	symtab_free(o->syms);
	free(o->help);
	free(o->build_hex);
}

/* The build-id of a loaded object, from its PT_NOTE segments in memory;
 * only notes that lie inside a loaded segment's file contents are read. */
static void phdr_build_id(const struct dl_phdr_info *info, struct object *o)
{
	int i, j;

	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *pn = &info->dlpi_phdr[i];
		bool mapped = false;

		if (pn->p_type != PT_NOTE || pn->p_filesz == 0)
			continue;
		for (j = 0; j < info->dlpi_phnum; j++) {
			const ElfW(Phdr) *pl = &info->dlpi_phdr[j];

			if (pl->p_type == PT_LOAD && (pl->p_flags & PF_R) &&
			    pn->p_vaddr >= pl->p_vaddr &&
			    pn->p_vaddr - pl->p_vaddr <= pl->p_filesz &&
			    pn->p_filesz <=
				    pl->p_filesz - (pn->p_vaddr - pl->p_vaddr))
				mapped = true;
		}
		if (mapped &&
		    notes_build_id((const uint8_t *)(info->dlpi_addr +
						     pn->p_vaddr),
				   pn->p_filesz, pn->p_align, o->build_id,
				   &o->build_id_len))
			return;
	}
}

static int scan_add_seg(struct scan *s, uintptr_t lo, uintptr_t hi)
{
	if (s->nsegs == s->capsegs) {
		size_t cap = s->capsegs ? s->capsegs * 2 : 64;
		struct seg *v = realloc(s->segs, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->segs = v;
		s->capsegs = cap;
	}
	s->segs[s->nsegs].lo = lo;
	s->segs[s->nsegs].hi = hi;
	s->segs[s->nsegs].obj = s->nobjs;
	s->nsegs++;
	return 0;
}

/* Runs under the loader lock: collects only, loads nothing. */
static int scan_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	struct scan *s = data;
	struct object *o;
	size_t first_seg = s->nsegs;
	bool is_vdso = false;
	int i;

	if (PHDR_INFO_HAS_COUNTERS(size)) {
		s->adds = info->dlpi_adds;
		s->subs = info->dlpi_subs;
	}
	if (s->nobjs == s->capobjs) {
		size_t cap = s->capobjs ? s->capobjs * 2 : 32;
		struct object *v = realloc(s->objs, cap * sizeof(*v));

		if (!v)
			goto nomem;
		s->objs = v;
		s->capobjs = cap;
	}
	o = &s->objs[s->nobjs];
	memset(o, 0, sizeof(*o));
	o->bias = info->dlpi_addr;

	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		uintptr_t lo, hi;

		if (p->p_type != PT_LOAD || p->p_memsz == 0)
			continue;
		lo = info->dlpi_addr + p->p_vaddr;
		if (lo > UINTPTR_MAX - p->p_memsz)
			continue;
		hi = lo + p->p_memsz;
		if (scan_add_seg(s, lo, hi) != 0)
			goto nomem;
		if (s->vdso && p->p_offset == 0 && lo == s->vdso) {
			is_vdso = true;
			o->image = (const void *)lo;
			/* Mappings are whole pages, and the vDSO's section
			 * headers sit past its segment's end. */
			o->image_size = align_up(p->p_filesz, s->page);
		}
	}
	if (s->nsegs == first_seg)
		return 0; /* nothing mapped: nothing to name */

	if (is_vdso) {
		o->path = strdup("[vdso]");
	} else if ((uintptr_t)info->dlpi_phdr == s->at_phdr ||
		   (!s->at_phdr && s->nobjs == 0 &&
		    (!info->dlpi_name || !info->dlpi_name[0]))) {
		/* /proc/self/exe opens the mapped file even if the path was
		 * replaced or deleted since. */
		o->path = strdup(s->exe_path);
		o->file = strdup(s->exe_file);
		o->real_path = s->exe_real ? strdup(s->exe_real) : NULL;
		if (!o->file || (s->exe_real && !o->real_path))
			goto nomem_obj;
	} else if (info->dlpi_name && info->dlpi_name[0]) {
		o->path = strdup(info->dlpi_name);
		o->file = strdup(info->dlpi_name);
		if (!o->file)
			goto nomem_obj;
	} else {
		o->path = strdup("[unknown]");
	}
	if (!o->path)
		goto nomem_obj;
	phdr_build_id(info, o);
	s->nobjs++;
	return 0;

nomem_obj:
	object_free(o);
nomem:
	s->err = -ENOMEM;
	return 1;
}

static int peek_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	struct scan *s = data;

	if (PHDR_INFO_HAS_COUNTERS(size)) {
		s->adds = info->dlpi_adds;
		s->subs = info->dlpi_subs;
	} else {
		s->err = -ENOSYS;
	}
	return 1;
}

static int seg_cmp(const void *pa, const void *pb)
{
	const struct seg *a = pa, *b = pb;

	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return 0;
}

static void cache_free_retired(void)
{
	size_t i;

	for (i = 0; i < cache.nretired; i++)
		object_free(&cache.retired[i]);
	free(cache.retired);
	cache.retired = NULL;
	cache.nretired = 0;
}

static void cache_clear(void)
{
	size_t i;

	for (i = 0; i < cache.nobjs; i++)
		object_free(&cache.objs[i]);
	free(cache.objs);
	free(cache.segs);
	cache_free_retired();
	memset(&cache, 0, sizeof(cache));
}

/* Takes over an old entry for the same mapping: its strings and table,
 * which callers may still hold. */
static void object_adopt(struct object *o, struct object *old)
{
	free(o->path);
	free(o->file);
	free(o->real_path);
	o->path = old->path;
	o->file = old->file;
	o->real_path = old->real_path;
	o->syms = old->syms;
	o->loaded = old->loaded;
	o->help = old->help;
	o->build_hex = old->build_hex;
	o->helped = old->helped;
	old->path = old->file = old->real_path = NULL;
	old->syms = NULL;
	old->loaded = false;
	old->help = old->build_hex = NULL;
	old->helped = false;
}

/* Rebuilds the object list, keeping the tables of objects still mapped at
 * the same place. 0 or -errno (the old cache stays then). */
static int cache_rescan(void)
{
	static char exe[PATH_MAX], exe_real[PATH_MAX];
	struct scan s = { 0 };
	struct object *graves;
	ssize_t n;
	size_t i, j;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		const char *del = " (deleted)";
		size_t dl = strlen(del);

		exe[n] = '\0';
		memcpy(exe_real, exe, (size_t)n + 1);
		if ((size_t)n > dl && strcmp(exe_real + n - dl, del) == 0)
			exe_real[n - dl] = '\0';
		s.exe_real = exe_real;
	} else {
		strcpy(exe, "/proc/self/exe");
	}
	/* A program started by naming the dynamic loader ("ld.so PROGRAM"):
	 * /proc/self/exe is the loader, the loader gave the program's own
	 * path in AT_EXECFN. */
	const char *execfn = (const char *)getauxval(AT_EXECFN);
	static char prog[PATH_MAX];
	s.exe_file = "/proc/self/exe";
	if (n > 0 && execfn && execfn[0] == '/' && strstr(exe, "/ld-") &&
	    realpath(execfn, prog) && strcmp(prog, exe_real) != 0 &&
	    !strstr(prog, "/ld-")) {
		memcpy(exe, prog, strlen(prog) + 1);
		memcpy(exe_real, prog, strlen(prog) + 1);
		s.exe_file = prog;
	}
	s.exe_path = exe;
	s.at_phdr = getauxval(AT_PHDR);
	s.vdso = getauxval(AT_SYSINFO_EHDR);
	s.page = getauxval(AT_PAGESZ);
	if (s.page == 0 || (s.page & (s.page - 1)))
		s.page = 4096;

	dl_iterate_phdr(scan_cb, &s);
	if (s.err) {
		for (i = 0; i < s.nobjs; i++)
			object_free(&s.objs[i]);
		free(s.objs);
		free(s.segs);
		return s.err;
	}
	graves = realloc(cache.retired,
			 (cache.nretired + cache.nobjs + 1) * sizeof(*graves));
	if (!graves) {
		for (i = 0; i < s.nobjs; i++)
			object_free(&s.objs[i]);
		free(s.objs);
		free(s.segs);
		return -ENOMEM;
	}
	cache.retired = graves;
	qsort(s.segs, s.nsegs, sizeof(*s.segs), seg_cmp);

	for (i = 0; i < s.nobjs; i++) {
		struct object *o = &s.objs[i];

		for (j = 0; j < cache.nobjs; j++) {
			struct object *old = &cache.objs[j];

			if (old->path && old->bias == o->bias &&
			    old->build_id_len == o->build_id_len &&
			    memcmp(old->build_id, o->build_id,
				   o->build_id_len) == 0 &&
			    strcmp(old->path, o->path) == 0) {
				object_adopt(o, old);
				break;
			}
		}
	}
	for (j = 0; j < cache.nobjs; j++) {
		if (cache.objs[j].path)
			cache.retired[cache.nretired++] = cache.objs[j];
	}
	free(cache.objs);
	free(cache.segs);
	cache.objs = s.objs;
	cache.nobjs = s.nobjs;
	cache.segs = s.segs;
	cache.nsegs = s.nsegs;
	cache.adds = s.adds;
	cache.subs = s.subs;
	cache.scanned = true;
	return 0;
}

/* One step of dl_iterate_phdr: did the loader add or remove anything? */
static bool cache_stale(void)
{
	struct scan s = { 0 };

	if (!cache.scanned)
		return true;
	dl_iterate_phdr(peek_cb, &s);
	return s.err != 0 || s.adds != cache.adds || s.subs != cache.subs;
}

static struct object *cache_find(uintptr_t addr)
{
	size_t lo = 0, hi = cache.nsegs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cache.segs[mid].lo <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || addr >= cache.segs[lo - 1].hi)
		return NULL;
	return &cache.objs[cache.segs[lo - 1].obj];
}

static void object_load(struct object *o)
{
	struct load_req r = { 0 };

	o->loaded = true;
	if (o->image) {
		o->syms = symtab_load_mem(o->image, o->image_size);
		return;
	}
	if (!o->file)
		return;
	r.file = o->file;
	r.real_path = o->real_path ? o->real_path : o->file;
	r.build_id = o->build_id;
	r.build_id_len = o->build_id_len;
	r.debug = true;
	o->syms = symtab_load_req(&r);
}

void symbols_refresh(void)
{
	cache_free_retired();
	if (cache_stale())
		cache_rescan();
}

bool symbols_lookup(uintptr_t addr, struct sym_info *out)
{
	struct object *o;

	memset(out, 0, sizeof(*out));
	if (!cache.scanned && cache_rescan() != 0)
		return false;
	o = cache_find(addr);
	if (!o && cache_stale()) {
		if (cache_rescan() != 0)
			return false;
		o = cache_find(addr);
	}
	if (!o)
		return false;
	if (!o->loaded)
		object_load(o);
	out->object = o->path;
	out->obj_base = o->bias;
	if (o->syms)
		out->name = symtab_find(o->syms, addr - o->bias, &out->offset);
	return true;
}

void symbols_flush(void)
{
	cache_clear();
}

/* ---------------------------------------------------------------------- */
/* What would name the frames of an object without symbols.                */

#define OS_RELEASE_MAX 8192
#define DPKG_INFO "/var/lib/dpkg/info"
/* dpkg's file lists read at most, per object. */
#define DPKG_MAX_FILES 8
#define DPKG_MAX_BYTES ((uint64_t)16 << 20)
#define DPKG_CHUNK 65536

enum { OS_OTHER, OS_DEBIAN, OS_FEDORA };

static bool word_in(const char *words, const char *const *set)
{
	char w[64];

	while (*words) {
		size_t n = strcspn(words, " \t");

		if (n > 0 && n < sizeof(w)) {
			memcpy(w, words, n);
			w[n] = '\0';
			for (const char *const *p = set; *p; p++)
				if (strcmp(w, *p) == 0)
					return true;
		}
		words += n;
		words += strspn(words, " \t");
	}
	return false;
}

/* The family of the distribution, from ID and ID_LIKE of os-release(5):
 * read once per process. */
static int os_family(void)
{
	static int family = -1;
	static const char *const debian[] = { "debian", "ubuntu", NULL };
	static const char *const fedora[] = { "fedora", "rhel", "centos", NULL };
	char buf[OS_RELEASE_MAX + 1];
	ssize_t n = -1;
	int fd;

	if (family >= 0)
		return family;
	family = OS_OTHER;
	fd = open("/etc/os-release", O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		fd = open("/usr/lib/os-release",
			  O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		n = pread(fd, buf, OS_RELEASE_MAX, 0);
		real_close(fd);
	}
	if (n <= 0)
		return family;
	buf[n] = '\0';
	for (char *line = buf, *next; line; line = next) {
		char *v;
		size_t len;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (strncmp(line, "ID=", 3) == 0)
			v = line + 3;
		else if (strncmp(line, "ID_LIKE=", 8) == 0)
			v = line + 8;
		else
			continue;
		len = strlen(v);
		if (len >= 2 && (v[0] == '"' || v[0] == '\'') &&
		    v[len - 1] == v[0]) {
			v[len - 1] = '\0';
			v++;
		}
		if (word_in(v, debian))
			family = OS_DEBIAN;
		else if (word_in(v, fedora) && family != OS_DEBIAN)
			family = OS_FEDORA;
	}
	return family;
}

/* "3.11" for .../python3.11, .../libpython3.11.so.1.0, python3.11d. */
static bool python_version(const char *path, char *ver, size_t cap)
{
	const char *b = strrchr(path, '/'), *v, *p;

	b = b ? b + 1 : path;
	if (strncmp(b, "lib", 3) == 0)
		b += 3;
	if (strncmp(b, "python", 6) != 0)
		return false;
	v = p = b + 6;
	if (*p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p++ != '.' || *p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	if ((size_t)(p - v) >= cap)
		return false;
	memcpy(ver, v, (size_t)(p - v));
	ver[p - v] = '\0';
	return true;
}

/* The same path on the other side of the /usr merge: /lib/x <-> /usr/lib/x
 * (dpkg lists a file where its package put it). */
static bool usr_twin(const char *path, char *out, size_t cap)
{
	static const char *const dirs[] = { "/lib", "/lib64", "/bin", "/sbin",
					    NULL };
	int n;

	for (const char *const *d = dirs; *d; d++) {
		size_t l = strlen(*d);

		if (strncmp(path, "/usr", 4) == 0 &&
		    strncmp(path + 4, *d, l) == 0 && path[4 + l] == '/') {
			n = snprintf(out, cap, "%s", path + 4);
			return n > 0 && (size_t)n < cap;
		}
		if (strncmp(path, *d, l) == 0 && path[l] == '/') {
			n = snprintf(out, cap, "/usr%s", path);
			return n > 0 && (size_t)n < cap;
		}
	}
	return false;
}

struct dpkg_search {
	char pat[2][PATH_MAX + 2]; /* "\nPATH\n" and its /usr twin */
	size_t plen[2];
	size_t npat;
	size_t maxpat;
	unsigned char *buf; /* DPKG_CHUNK + maxpat */
	uint64_t bytes; /* read so far */
	size_t files;
};

/* Whether the file list of package name (NAME.list, without the directory)
 * has one of the paths. */
static bool dpkg_list_has(struct dpkg_search *d, const char *name)
{
	char file[PATH_MAX];
	size_t keep = 1;
	bool found = false;
	int fd, n;

	if (++d->files > DPKG_MAX_FILES || d->bytes > DPKG_MAX_BYTES)
		return false;
	n = snprintf(file, sizeof(file), DPKG_INFO "/%s", name);
	if (n <= 0 || (size_t)n >= sizeof(file))
		return false;
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return false;
	d->buf[0] = '\n'; /* the first line has no newline before it */
	for (off_t at = 0; !found;) {
		ssize_t r = pread(fd, d->buf + keep, DPKG_CHUNK, at);
		size_t have;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		d->bytes += (uint64_t)r;
		at += r;
		have = keep + (size_t)r;
		for (size_t i = 0; i < d->npat && !found; i++)
			found = memmem(d->buf, have, d->pat[i], d->plen[i]) != NULL;
		if (d->bytes > DPKG_MAX_BYTES)
			break;
		keep = have < d->maxpat - 1 ? have : d->maxpat - 1;
		memmove(d->buf, d->buf + have - keep, keep);
	}
	real_close(fd);
	return found;
}

/* The package of a list file's name: "libc6:amd64.list" -> "libc6". */
static bool dpkg_name(const char *list, char *pkg, size_t cap)
{
	size_t n = strlen(list) - 5, colon = strcspn(list, ":");

	if (colon < n)
		n = colon;
	if (n == 0 || n >= cap)
		return false;
	memcpy(pkg, list, n);
	pkg[n] = '\0';
	return true;
}

/* The list a shared library's package usually has, by Debian's naming of
 * library packages: libfoo.so.3 in libfoo3, libfoo-1.2.so.0 in
 * libfoo-1.2-0. */
static bool dpkg_guess(const char *path, char *out, size_t cap, bool arch)
{
	const char *b = strrchr(path, '/'), *so, *ver;
	size_t stem;
	int n;

	b = b ? b + 1 : path;
	so = strstr(b, ".so.");
	if (!so || strncmp(b, "lib", 3) != 0 || so == b + 3)
		return false;
	stem = (size_t)(so - b);
	ver = so + 4;
	if (*ver < '0' || *ver > '9')
		return false;
	n = snprintf(out, cap, "%.*s%s%.*s%s.list", (int)stem, b,
		     b[stem - 1] >= '0' && b[stem - 1] <= '9' ? "-" : "",
		     (int)strspn(ver, "0123456789"), ver, arch ? ":amd64" : "");
	return n > 0 && (size_t)n < cap;
}

/*
 * The Debian package that installed path, from dpkg's file lists: plain
 * file reads (no package tool is run) of the lists its file name suggests
 * (libfoo.so.3: libfoo3, with and without ":amd64"; a program: its own
 * name), no more. Reading every list (some 10 to 50 MB) would hold up the
 * watchdog's reports for a large part of a second on a busy machine.
 */
static bool dpkg_owner(const char *path, char *pkg, size_t cap)
{
	struct dpkg_search d = { .npat = 0 };
	char twin[PATH_MAX], guess[NAME_MAX + 1];
	const char *base = strrchr(path, '/');
	bool found = false;
	int n;

	if (path[0] != '/' || strlen(path) >= PATH_MAX)
		return false;
	/* Packages install into /usr (and the merged /lib, /bin), never into
	 * /usr/local, /opt, home directories or virtual environments. */
	if (strncmp(path, "/usr/local/", 11) == 0 ||
	    (strncmp(path, "/usr/", 5) != 0 && !usr_twin(path, twin, sizeof(twin))))
		return false;
	d.plen[d.npat] = (size_t)snprintf(d.pat[d.npat], sizeof(d.pat[0]),
					  "\n%s\n", path);
	d.npat++;
	if (usr_twin(path, twin, sizeof(twin))) {
		d.plen[d.npat] = (size_t)snprintf(d.pat[d.npat],
						  sizeof(d.pat[0]), "\n%s\n",
						  twin);
		d.npat++;
	}
	for (size_t i = 0; i < d.npat; i++)
		if (d.plen[i] > d.maxpat)
			d.maxpat = d.plen[i];
	d.buf = big_alloc(DPKG_CHUNK + d.maxpat);
	if (!d.buf)
		return false;
	for (int arch = 0; arch < 2 && !found; arch++)
		if (dpkg_guess(path, guess, sizeof(guess), arch) &&
		    dpkg_list_has(&d, guess))
			found = dpkg_name(guess, pkg, cap);
	n = snprintf(guess, sizeof(guess), "%s.list", base + 1);
	if (!found && n > 5 && (size_t)n < sizeof(guess) && !strchr(guess, ':') &&
	    dpkg_list_has(&d, guess))
		found = dpkg_name(guess, pkg, cap);
	big_free(d.buf);
	return found;
}

/* Makes o->build_hex and o->help (see symbols_help). */
static void object_help(struct object *o)
{
	char hex[BUILD_ID_MAX * 2 + 1], where[PATH_MAX + 64], text[2 * PATH_MAX];
	char ver[16], pkg[256];
	size_t i;

	o->helped = true;
	for (i = 0; i < o->build_id_len; i++)
		snprintf(hex + 2 * i, 3, "%02x", o->build_id[i]);
	hex[2 * i] = '\0';
	o->build_hex = strdup(hex);
	if (!o->build_hex || !o->file || o->image || (o->syms && o->syms->full))
		return;
	if (o->build_id_len >= 2)
		snprintf(where, sizeof(where),
			 "its debug file is read from " DEBUG_ROOT
			 "/.build-id/%.2s/%s.debug", hex, hex + 2);
	else
		snprintf(where, sizeof(where),
			 "it has no build id: only a debug file named by its "
			 ".gnu_debuglink is found");
	switch (os_family()) {
	case OS_DEBIAN:
		if (python_version(o->path, ver, sizeof(ver)))
			snprintf(text, sizeof(text),
				 "install python%s-dbg (%s)", ver, where);
		else if (dpkg_owner(o->path, pkg, sizeof(pkg)))
			snprintf(text, sizeof(text),
				 "install %s-dbgsym from the distribution's "
				 "debug archive, or %s-dbg where there is "
				 "one (%s)",
				 pkg, pkg, where);
		else if (strncmp(o->path, "/usr/local/", 11) == 0 ||
			 (strncmp(o->path, "/usr/", 5) != 0 &&
			  !usr_twin(o->path, pkg, sizeof(pkg))))
			snprintf(text, sizeof(text),
				 "not from a Debian package: build it with "
				 "symbols, or keep them in a debug file (%s)",
				 where);
		else
			snprintf(text, sizeof(text),
				 "install the -dbgsym package (the "
				 "distribution's debug archive) of the package "
				 "that dpkg -S %s names (%s)", o->path, where);
		break;
	case OS_FEDORA:
		snprintf(text, sizeof(text),
			 "install its debuginfo package: dnf debuginfo-install "
			 "the package that rpm -qf %s names (%s)", o->path,
			 where);
		break;
	default:
		snprintf(text, sizeof(text),
			 "install the distribution's debug symbols for it (%s)",
			 where);
		break;
	}
	o->help = strdup(text);
}

const char *symbols_help(uintptr_t addr, const char **build_id)
{
	struct object *o;

	*build_id = NULL;
	if (!cache.scanned)
		return NULL;
	o = cache_find(addr);
	if (!o)
		return NULL;
	if (!o->loaded)
		object_load(o);
	if (!o->helped)
		object_help(o);
	*build_id = o->build_hex && o->build_hex[0] ? o->build_hex : NULL;
	return o->help;
}
