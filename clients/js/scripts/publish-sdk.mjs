// Second half of `npm run build`: tsc has written the SDK to dist/; copy it to the gateway's
// classpath folder web/sdk (target/classes/web/sdk) so the running service serves it at /sdk/.
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dist = resolve(here, '..', 'dist')
const web = resolve(here, '..', '..', '..', 'target', 'classes', 'web', 'sdk')

rmSync(web, { recursive: true, force: true })
mkdirSync(web, { recursive: true })
let copied = 0
for (const name of readdirSync(dist)) {
  if (name.endsWith('.js') || name.endsWith('.d.ts')) {
    cpSync(join(dist, name), join(web, name))
    copied++
  }
}
console.log(`SDK: ${copied} files in ${dist} and ${web}`)
