<?php

// The file store lives in storage/, shared by the host's releases: `artisan queue:restart`
// (run from the new release) and the worker (started from the old one) read the same key.
return [
    'default' => env('CACHE_DRIVER', 'file'),

    'stores' => [
        'file' => [
            'driver' => 'file',
            'path' => storage_path('framework/cache/data'),
        ],
        'array' => ['driver' => 'array', 'serialize' => false],
    ],

    'prefix' => 'laravel_app_cache',
];
