/*
 * Size-checked symbol tables read with libelf, and a per-object cache for
 * naming the instruction pointers of captured stacks.
 *
 * Runs in the watchdog thread only. The files read here are whatever the
 * host mapped, so every offset, size, index and string taken from a file is
 * checked against the file before use: a malformed or truncated object gives
 * no names, never a crash. Files are read with pread (ELF_C_READ), not
 * mmap'd, so a file truncated under us gives a short read, not SIGBUS.
 */
#include "symbols.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <libelf.h>
#include <limits.h>
#include <link.h>
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
	struct elf_file f, g = { .fd = -1 };
	struct builder b = { 0 };
	struct symtab *t = NULL;
	const uint8_t *id;
	size_t id_len;
	bool file_ok = true;

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
	}
	if (r->debug && (!file_ok || !f.has_symtab) &&
	    debug_find(&g, &f, file_ok ? r->real_path : NULL, id, id_len)) {
		if (builder_collect(&b, &g, SHT_SYMTAB) != 0)
			goto out;
	}
	t = builder_finish(&b);
out:
	big_free(b.v);
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
	struct elf_file f;
	struct builder b = { 0 };
	struct symtab *t = NULL;

	if (elf_file_mem(&f, data, size) != 0)
		return NULL;
	if (builder_collect(&b, &f, SHT_SYMTAB) == 0 &&
	    builder_collect(&b, &f, SHT_DYNSYM) == 0)
		t = builder_finish(&b);
	big_free(b.v);
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
	old->path = old->file = old->real_path = NULL;
	old->syms = NULL;
	old->loaded = false;
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
