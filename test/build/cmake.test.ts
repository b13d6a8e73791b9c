/**
 * `orion build` end to end on fixtures/cmake-project (CMake + Ninja: a C
 * static library, a C++ program, a header made by add_custom_command),
 * embedded and on a head with two nodes.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { run, sh } from '../helpers/build.js';
import { defineFixtureSuite, edit } from './fixture-suite.js';

const OBJ = {
  area: 'build/CMakeFiles/shapes.dir/lib/area.c.o',
  perimeter: 'build/CMakeFiles/shapes.dir/lib/perimeter.c.o',
  main: 'build/CMakeFiles/shapes_demo.dir/app/main.cpp.o',
};

/** Every translation unit includes shapes.h; a `used` object makes each of them change with it. */
const editShapesHeader = (dir: string) =>
  edit(path.join(dir, 'include/shapes.h'), (t) => t.replace('#define SHAPES_H\n', '#define SHAPES_H\n\nstatic const char shapes_header_tag[] __attribute__((used)) = "edited";\n'));

defineFixtureSuite({
  fixture: 'cmake-project',
  plainBuild: async (dir, env) => void (await sh('cmake -G Ninja -S . -B build >/dev/null && ninja -C build', dir, env)),
  // CMake takes its initial flags from CFLAGS/CXXFLAGS, for the plain configure and for the one orion runs.
  debugInfo: { env: { CFLAGS: '-g', CXXFLAGS: '-g' } },
  clean: (dir) => rm(path.join(dir, 'build'), { recursive: true, force: true }),
  products: ['build/shapes_demo', 'build/libshapes.a', OBJ.area, OBJ.perimeter, OBJ.main],
  async checkPrograms(dir) {
    const r = await run(['./build/shapes_demo'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('shapes 2.3.0\nrectangle 3x4: area 12, perimeter 14\n');
  },
  // CMake records absolute compiler paths, so configure the embedded copy with
  // the wrappers as its toolchain. Cluster nodes cannot run the wrappers (their
  // sandbox holds the system directories and the project only): there the copy
  // is configured with the system toolchain, as a plain configure finds it, and
  // the nodes' own logs show whether anything ran.
  async useWrappers(dir, w, mode) {
    const tools = mode === 'embedded' ? { cc: `${w}/cc`, cxx: `${w}/c++`, ar: `${w}/ar`, ranlib: `${w}/ranlib` } : { cc: '/usr/bin/cc', cxx: '/usr/bin/c++', ar: '/usr/bin/ar', ranlib: '/usr/bin/ranlib' };
    await sh(`cmake -G Ninja -S . -B build -DCMAKE_C_COMPILER=${tools.cc} -DCMAKE_CXX_COMPILER=${tools.cxx} -DCMAKE_AR=${tools.ar} -DCMAKE_RANLIB=${tools.ranlib} >/dev/null`, dir);
  },
  wrappersSeeFirstBuild: (mode) => mode === 'embedded',
  headerEdit: {
    apply: editShapesHeader,
    rebuilt: [`CC ${OBJ.area}`, `CC ${OBJ.perimeter}`, `CXX ${OBJ.main}`, 'AR build/libshapes.a', 'LD build/shapes_demo'],
  },
  explainEdit: {
    header: 'include/shapes.h',
    apply: (dir) => edit(path.join(dir, 'include/shapes.h'), (t) => t.replace('"edited"', '"edited again"')),
    rebuilt: [`CC ${OBJ.area}`, `CC ${OBJ.perimeter}`, `CXX ${OBJ.main}`],
  },
  broken: { file: 'lib/perimeter.c', label: `CC ${OBJ.perimeter}`, built: [OBJ.area, OBJ.main], missing: [OBJ.perimeter, 'build/libshapes.a', 'build/shapes_demo'], notRun: 2 },
  graphKinds: ['compile', 'archive', 'link', 'other'],
  dryRunMayWrite: (rel) => rel.startsWith('build/'),
});
