// Validates an OpenAPI document with @apidevtools/swagger-parser: against the
// official schema of its version (3.1 here), and the rules a schema cannot say
// (unique operationIds, path parameters declared, $refs that resolve).
// Usage: node validate.js FILE. Prints "valid: TITLE VERSION (N paths)" or the
// errors, and exits 0 or 1.
'use strict';
const SwaggerParser = require('@apidevtools/swagger-parser');

SwaggerParser.validate(process.argv[2])
  .then((api) => {
    console.log(`valid: ${api.info.title} ${api.info.version}, OpenAPI ${api.openapi} (${Object.keys(api.paths).length} paths)`);
  })
  .catch((err) => {
    console.error(`invalid: ${err.message}`);
    process.exit(1);
  });
